"""Package a healed reader for the repo: its recipe, heal adapter and fingerprint.

    python scripts/heal_recipe.py --student /tmp/stu96 --adapter runs/distill-96/final \
        --source checkpoints/rag-ft-smollm2 --calib-file checkpoints/healed/calib-128x256-seed0.json \
        --out checkpoints/healed/ragft-mla96 --note "distill lora r16, 8 min on H200, dev-select EM ..."
    rearqa convert --recipe checkpoints/healed/ragft-mla96 --out readers/ragft-mla96-healed   # any CPU

Run it where the adapter was trained, on the converted reader it was trained over (--student):
the fingerprint is taken from those weights. --source and --calib-file are the paths they have in
the repo (written relative to --out); the adapter's adapter_config.json and weights are copied
(bf16, at most 20 MB; the tokenizer files are not: the reader takes the source's).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> None:
    from rearqa.app.recipe_cmd import package_healed

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", type=Path, required=True, help="the converted reader the adapter healed")
    ap.add_argument("--adapter", type=Path, required=True, help="the heal adapter (peft save_pretrained)")
    ap.add_argument("--source", required=True, help="base | what the student was converted from")
    ap.add_argument("--calib-file", type=Path, help="the calibration ids the student was converted on")
    ap.add_argument("--out", type=Path, required=True, help="checkpoints/healed/NAME")
    ap.add_argument("--note", default="", help="what it is: the run, the machine, its scores")
    args = ap.parse_args()
    out = package_healed(args.student, args.adapter, args.out, args.source, args.calib_file, args.note)
    print(f"wrote {out}: recipe.json, heal/, fingerprint.json")


if __name__ == "__main__":
    main()
