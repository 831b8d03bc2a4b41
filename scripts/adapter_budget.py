"""Equal-budget settings of the LoRA-family methods for the comparison of issue 15.

    python scripts/adapter_budget.py --out docs/results/adapters/equal-budget.json \
        --write-recipes configs/adapters/budget

Counts each candidate's trainable adapter parameters by wrapping the reader's architecture (the
bundled SmolLM2's config, built on the meta device: shapes only, no weights) with the method, and
picks per method the candidate closest to the reference (plain LoRA, rank 16, all linear layers
but lm_head: the recipe REAR trains with). The REAR token rows and rank head train in every run
alike and are not counted. A method with no candidate within --tolerance of the reference is
listed with its closest one and flagged; `--write-recipes DIR` writes each method's choice as an
adapter recipe (configs/adapters/, `rearqa train ... --recipe DIR/NAME.yaml`).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
REFERENCE = {"adapter": "lora", "lora_r": 16, "lora_target": "all-linear"}


def candidates() -> dict[str, list[dict]]:
    """Per method, the settings searched (recipe keys; lora_alpha = 2 r throughout)."""
    out: dict[str, list[dict]] = {"lora": [REFERENCE]}
    out["hydra"] = [{"adapter": "hydra", "lora_r": r, "lora_target": "all-linear",
                     "adapter_options": {"sequential_r": rs, "sequential_alpha": 2 * rs}}
                    for r in (4, 8, 12, 16) for rs in (2, 4, 8, 12, 16) if r + rs <= 32]
    out["dvlora"] = [{"adapter": "dvlora", "lora_r": r, "lora_target": "all-linear",
                      "adapter_options": {"gate": "none"}} for r in range(12, 17)]
    out["gdvlora"] = [{"adapter": "dvlora", "lora_r": r, "lora_target": "all-linear",
                       "adapter_options": {"gate": "scalar"}} for r in range(12, 17)]
    out["blocklora"] = [{"adapter": "blocklora", "lora_r": r, "lora_target": "all-linear",
                         "adapter_options": {"blocks": n}}
                        for n in (2, 4) for r in range(n, 65, n)]
    out["blocklora-input"] = [{"adapter": "blocklora", "lora_r": r, "lora_target": "all-linear",
                               "adapter_options": {"blocks": n, "share": "input"}}
                              for n in (2, 4) for r in range(8, 49)]
    out["masa"] = [{"adapter": "masa", "lora_r": 16, "lora_target": target,
                    "adapter_options": {"atoms": s}}
                   for target in (ATTENTION, ["q_proj", "o_proj"], ["q_proj", "k_proj", "v_proj"])
                   for s in range(1, 13)]
    return out


def meta_model(model_dir: Path):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def trainable(model_dir: Path, recipe: dict) -> int:
    from rearqa.reader.adapters import wrap
    from rearqa.training.config import TrainConfig

    config = TrainConfig(method="rag-ft", lora_alpha=2 * recipe["lora_r"], **recipe)
    peft_model = wrap(config.adapter, meta_model(model_dir), config.adapter_settings())
    return sum(p.numel() for p in peft_model.parameters() if p.requires_grad)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=None, help="reader checkpoint dir (default: SmolLM2)")
    p.add_argument("--tolerance", type=float, default=0.05)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--write-recipes", type=Path, default=None)
    args = p.parse_args()
    from rearqa.assets import reader_model_dir

    model_dir = args.model or reader_model_dir()
    reference = trainable(model_dir, REFERENCE)
    rows = []
    for method, grid in candidates().items():
        counted = [(trainable(model_dir, c), c) for c in grid]
        params, choice = min(counted, key=lambda pc: (abs(pc[0] - reference), pc[0]))
        rows.append({"method": method, "recipe": {**choice, "lora_alpha": 2 * choice["lora_r"]},
                     "trainable": params, "ratio": params / reference,
                     "within_tolerance": abs(params / reference - 1) <= args.tolerance,
                     "searched": len(grid)})
    print(f"reference: plain LoRA r 16 all-linear, {reference:,} trainable adapter parameters "
          f"({model_dir.name})")
    print(f"{'method':<15} {'trainable':>11} {'ratio':>6}  within {args.tolerance:.0%}  settings")
    for row in rows:
        r = row["recipe"]
        print(f"{row['method']:<15} {row['trainable']:>11,} {row['ratio']:>6.3f}  "
              f"{'yes' if row['within_tolerance'] else 'NO ':<10} r={r['lora_r']} "
              f"target={r['lora_target']} {r.get('adapter_options', {})}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": str(model_dir), "reference": reference,
                                    "tolerance": args.tolerance, "methods": rows}, indent=1))
    if args.write_recipes:
        import yaml

        args.write_recipes.mkdir(parents=True, exist_ok=True)
        for row in rows:
            note = (f"# Equal-budget recipe (scripts/adapter_budget.py): {row['trainable']:,} trainable "
                    f"adapter parameters on {model_dir.name}, {row['ratio']:.3f} x plain LoRA r 16 "
                    f"all-linear{'' if row['within_tolerance'] else ' (OUTSIDE the tolerance)'}.\n")
            body = yaml.safe_dump({**row["recipe"], "lora_dropout": 0.05}, sort_keys=False,
                                  default_flow_style=None)
            (args.write_recipes / f"{row['method']}.yaml").write_text(note + body)


if __name__ == "__main__":
    main()
