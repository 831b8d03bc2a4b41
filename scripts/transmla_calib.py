"""Write TransMLA's calibration token ids to a file, for converting on a machine without the corpus.

    python scripts/transmla_calib.py --samples 128 --tokens 256 --seed 0 --out build/transmla-calib.json
    rearqa convert --transform transmla ... --calib-file build/transmla-calib.json   # on the other machine

The ids are the ones `rearqa convert` draws from the corpus with the same settings (the 90%
calibration part of the seeded split); the file carries their record and sha256, checked on load.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> None:
    from transformers import AutoTokenizer

    from rearqa import assets
    from rearqa.reader.backbone.transmla.calibration import corpus_calibration, save_calibration

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    home = assets.ensure_prepared(progress=False)
    tokenizer = AutoTokenizer.from_pretrained(assets.reader_model_dir(home))
    tokens, _, record = corpus_calibration(tokenizer, assets.corpus_file(home), args.samples,
                                           args.tokens, args.seed)
    save_calibration(args.out, tokens, record)
    print(f"wrote {args.out}: {record.n_samples} x {record.n_tokens} tokens, sha256 {record.sha256[:12]}")


if __name__ == "__main__":
    main()
