"""`python -m rearqa.eval.benchmarks.index`: run the index benchmark."""
from rearqa.eval.benchmarks.index import main

main()
