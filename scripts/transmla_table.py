"""The training-free cost of TransMLA on the reader: KV bytes, parameters, perplexity, CPU decode.

    python scripts/transmla_table.py --from checkpoints/rag-ft-smollm2 \
        --settings 320+64 192+64 96+64 128+32 --out docs/results/transmla/table.json \
        --save-dir runs/transmla

For the reader `--from` (as `rearqa convert --from` takes it) and each kv_lora_rank+rope setting:
the KV bytes per token the manifest declares and the bytes the cache tensors hold after a
generation, the parameter count, the perplexity on held-out corpus passages (never the text it
was calibrated on) of the original, of the partial-RoPE model (step (b) only, freqfold chosen on a
separate held-out selection sample) and of the MLA model, and CPU decode tokens/s with a 1K and 4K
token context. Ratios are against the unconverted reader measured in the same run. `--save-dir`
keeps each converted reader (rearqa eval --reader DIR scores its answers).
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rearqa import assets  # noqa: E402
from rearqa.app.convert_cmd import load_source  # noqa: E402
from rearqa.asset_paths import corpus_file  # noqa: E402
from rearqa.reader.backbone import get_transform  # noqa: E402
from rearqa.reader.backbone.base import dense_kv_bytes_per_token  # noqa: E402
from rearqa.reader.backbone.transmla.calibration import (  # noqa: E402
    CalibrationRecord, corpus_calibration, perplexity)
from rearqa.reader.backbone.transmla.config import TransMLAConfig  # noqa: E402
from rearqa.reader.backbone.transmla.convert import collect_kv_moments, convert  # noqa: E402
from rearqa.reader.backbone.transmla.modeling import measured_kv_bytes  # noqa: E402


def parse_setting(text: str) -> tuple[int, int]:
    rank, _, rope = text.partition("+")
    return int(rank), int(rope)


def params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def cache_bytes_per_token(model, ids: torch.Tensor, new_tokens: int = 8) -> float:
    """Bytes the cache tensors hold per token after a greedy generation from `ids` (1, T)."""
    out = model.generate(input_ids=ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                         do_sample=False, return_dict_in_generate=True, pad_token_id=0)
    tokens = out.sequences.shape[1] - 1  # the last token is sampled, never cached
    return measured_kv_bytes(out.past_key_values) / tokens


@torch.no_grad()
def decode_tokens_per_s(model, context: torch.Tensor, steps: int) -> float:
    """Greedy decode speed after a prefill of `context` (1, T): `steps` tokens timed."""
    out = model(input_ids=context, use_cache=True)
    cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
    start = time.perf_counter()
    for _ in range(steps):
        out = model(input_ids=token, past_key_values=cache, use_cache=True)
        cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
    return steps / (time.perf_counter() - start)


def context_of(heldout: torch.Tensor, length: int) -> torch.Tensor:
    flat = heldout.reshape(-1)
    return flat.repeat(length // flat.numel() + 1)[:length].view(1, -1)


def choose_freqfold(model, calib, moments, select, rope: int, folds: list[int], base: TransMLAConfig):
    """The freqfold of lowest partial-RoPE perplexity on the selection sample, and all of them."""
    scores = {}
    for fold in folds:
        cfg = replace(base, rope_dim=rope, freqfold=fold, kv_lora_rank=1)
        partial, _ = convert(model, calib, cfg, compress=False, moments=moments)
        scores[fold] = perplexity(partial, select)
        print(f"  rope {rope} freqfold {fold}: selection ppl {scores[fold]:.3f}", flush=True)
    return min(scores, key=scores.get), scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="source", default="checkpoints/rag-ft-smollm2")
    ap.add_argument("--settings", nargs="+", default=["320+64", "192+64", "96+64", "128+32"])
    ap.add_argument("--calib", type=int, default=128, help="calibration samples of --tokens")
    ap.add_argument("--heldout", type=int, default=64, help="held-out samples (half select, half report)")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--contexts", type=int, nargs="*", default=[1024, 4096])
    ap.add_argument("--decode-steps", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--norm-settings", nargs="*", default=["192+64"],
                    help="settings also measured with the latent RMSNorm")
    ap.add_argument("--save-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    home = assets.ensure_prepared(progress=False)
    model, tokenizer, rear, source = load_source(args.source, home)
    if rear is not None:
        raise SystemExit("--from a REAR checkpoint: convert it with rearqa convert; this table "
                         "scores the causal LM alone")
    calib, heldout, record = corpus_calibration(tokenizer, corpus_file(home), args.calib,
                                                args.tokens, args.seed, heldout_samples=args.heldout)
    half = args.heldout // 2
    select, report = heldout[:half], heldout[half:]
    base_ppl = perplexity(model, report)
    dense = dense_kv_bytes_per_token(model.config, torch.bfloat16)
    print(f"original: ppl {base_ppl:.3f}, {dense} KV bytes/token (bf16)", flush=True)
    bf16 = copy.deepcopy(model).to(torch.bfloat16)  # the reader's serving dtype; fp32 stays exact
    rows = [{"setting": "original (GQA)", "kv_bytes_declared": dense,
             "kv_bytes_measured": cache_bytes_per_token(bf16, report[:1, :64]),
             "params": params(model), "ppl": base_ppl, "ppl_partial_rope": None}]
    rows[0].update({f"tokens_per_s_{c}": decode_tokens_per_s(bf16, context_of(report, c), args.decode_steps)
                    for c in args.contexts})
    del bf16

    transform = get_transform("transmla")
    moments = collect_kv_moments(model, calib)  # one calibration pass shared by every setting
    folds_for = {}
    for text in args.settings:
        rank, rope = parse_setting(text)
        base_cfg = TransMLAConfig(kv_lora_rank=rank, rope_dim=rope, calib_passages=args.calib,
                                  calib_tokens=args.tokens, seed=args.seed)
        shape = base_cfg.check_model(model.config)
        if rope not in folds_for:
            collapse = shape.head_dim // rope
            folds = [f for f in (1, 2, 4, 8) if f % collapse == 0]
            folds_for[rope] = choose_freqfold(model, calib, moments, select, rope, folds, base_cfg)
        fold, fold_scores = folds_for[rope]
        cfg = replace(base_cfg, freqfold=fold)
        partial, _ = convert(model, calib, cfg, compress=False, moments=moments)
        partial_ppl = perplexity(partial, report)
        del partial
        mla = transform.apply(model, calib, cfg, record=record, moments=moments)
        row = {"setting": f"{rank}+{rope}", "freqfold": fold, "freqfold_selection_ppl": fold_scores,
               "kv_bytes_declared": transform.kv_bytes_per_token(mla.config, torch.bfloat16),
               "params": params(mla), "ppl": perplexity(mla, report), "ppl_partial_rope": partial_ppl}
        mla.to(torch.bfloat16)
        row["kv_bytes_measured"] = cache_bytes_per_token(mla, report[:1, :64])
        for c in args.contexts:
            row[f"tokens_per_s_{c}"] = decode_tokens_per_s(mla, context_of(report, c), args.decode_steps)
        if args.save_dir:  # saved in bf16, the dtype the reader serves in
            out_dir = args.save_dir / f"transmla-{rank}-{rope}"
            transform.export(mla, out_dir, cfg, calibration=record.to_dict(), source=source)
            tokenizer.save_pretrained(out_dir)
            row["saved"] = str(out_dir)
        print(f"{row['setting']}: ppl {row['ppl']:.3f} (partial RoPE {partial_ppl:.3f}), "
              f"KV {row['kv_bytes_declared']} declared / {row['kv_bytes_measured']:.0f} measured", flush=True)
        rows.append(row)
        del mla

    norm_rows = []
    for text in args.norm_settings:  # the latent RMSNorm vLLM's DeepSeek model always applies
        rank, rope = parse_setting(text)
        cfg = TransMLAConfig(kv_lora_rank=rank, rope_dim=rope, latent_norm=True, seed=args.seed)
        cfg.check_model(model.config)
        mla = transform.apply(model, calib, cfg, record=record, moments=moments)
        norm_rows.append({"setting": f"{rank}+{rope} latent norm", "freqfold": cfg.freqfold,
                          "ppl": perplexity(mla, report), "init": "constant weight = calibration "
                          "root-mean-square of the latent"})
        print(norm_rows[-1], flush=True)
        del mla

    for row in rows:
        row["kv_ratio_vs_gqa"] = dense / row["kv_bytes_declared"]
        row["ppl_ratio_vs_gqa"] = row["ppl"] / base_ppl
        for c in args.contexts:
            row[f"speed_ratio_{c}"] = row[f"tokens_per_s_{c}"] / rows[0][f"tokens_per_s_{c}"]
    print_table(rows, args.contexts)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"source": source, "calibration": record.to_dict(), "heldout_report_samples": report.shape[0],
              "heldout_select_samples": select.shape[0], "threads": args.threads,
              "decode_steps": args.decode_steps, "torch": torch.__version__, "rows": rows,
              "latent_norm_rows": norm_rows}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


def print_table(rows: list[dict], contexts: list[int]) -> None:
    head = ["setting", "freqfold", "KV B/token (decl.)", "measured", "x smaller", "params (M)",
            "ppl partial RoPE", "ppl", "ppl x"] + [f"tok/s {c}" for c in contexts] + [f"x {c}" for c in contexts]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        cells = [r["setting"], str(r.get("freqfold", "-")), f"{r['kv_bytes_declared']:,}",
                 f"{r['kv_bytes_measured']:,.0f}", f"{r['kv_ratio_vs_gqa']:.2f}", f"{r['params'] / 1e6:.1f}",
                 "-" if r["ppl_partial_rope"] is None else f"{r['ppl_partial_rope']:.2f}",
                 f"{r['ppl']:.2f}", f"{r['ppl_ratio_vs_gqa']:.2f}"]
        cells += [f"{r[f'tokens_per_s_{c}']:.1f}" for c in contexts]
        cells += [f"{r[f'speed_ratio_{c}']:.2f}" for c in contexts]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
