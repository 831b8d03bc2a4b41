"""rearqa: relevance-aware retrieval-augmented question answering.

    from rearqa import Pipeline
    answer = Pipeline().ask("Who wrote Hamlet?")
    print(answer.text, [c.passage.title for c in answer.citations])
"""
from rearqa.types import Answer, Citation, Passage

__all__ = ["Answer", "Citation", "Passage", "Pipeline", "PipelineConfig"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # Pipeline pulls in torch and transformers; import it only when asked for.
    if name == "Pipeline":
        from rearqa.pipeline import Pipeline
        return Pipeline
    if name == "PipelineConfig":
        from rearqa.config import PipelineConfig
        return PipelineConfig
    raise AttributeError(f"module 'rearqa' has no attribute {name!r}")
