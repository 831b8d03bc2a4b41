"""TPLA's error against full MLA on the real reader, by latent rotation, and its CPU decode speed.

    python scripts/tpla_error.py --from base --settings 128+32 96+64 --out docs/results/tpla/error.json

For each kv_lora_rank+rope setting the reader `--from` (as `rearqa convert --from` takes it) is
converted with TransMLA on corpus calibration text (as scripts/transmla_table.py does), and
TPLA with `--shards` shards is compared with full MLA on held-out corpus text (never calibrated
on): teacher-forced token-by-token decode of `--samples` x `--length` tokens after a full-MLA
prefill of `--prefill` tokens. Per rotation (none / hadamard / pca) and no-RoPE logit scale
(`--nope-scales`: 1 is TPLA as described, g an experiment, see sharded.py): max and mean |logit
difference|, KL(full || TPLA) per decode step, top-1 agreement, and the perplexity of the
decode-path predictions (full MLA's decode-path perplexity alongside). Then decode tokens/s with a
`--context`-token prompt, batch 1: full MLA in one process (`--threads`), the TPLA simulation in
one process, and the real `--shards`-process gloo run (`--threads-per-rank` each), whose
logits are checked against the simulation's.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
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
from rearqa.reader.backbone.tpla import decode  # noqa: E402
from rearqa.reader.backbone.tpla.config import TPLAConfig  # noqa: E402
from rearqa.reader.backbone.tpla.dist import run_distributed  # noqa: E402
from rearqa.reader.backbone.tpla.rotation import rotate_for_tpla  # noqa: E402
from rearqa.reader.backbone.tpla.sharded import install_tpla  # noqa: E402
from rearqa.reader.backbone.transmla.calibration import (  # noqa: E402
    calibration_batches, corpus_calibration, read_passages, split_passages)
from rearqa.reader.backbone.transmla.config import TransMLAConfig  # noqa: E402
from rearqa.reader.backbone.transmla.convert import collect_kv_moments  # noqa: E402


def compare(full: torch.Tensor, approx: torch.Tensor, targets: torch.Tensor) -> dict:
    """Error of decode-path logits `approx` against `full` (B, S, V), and approx's perplexity of
    `targets` (B, S); per-sample rows kept so each number traces back to its samples."""
    diff = (approx - full).abs()  # (B, S, V)
    logp_full, logp = full.double().log_softmax(-1), approx.double().log_softmax(-1)
    kl = (logp_full.exp() * (logp_full - logp)).sum(-1)  # (B, S) KL(full || approx)
    nll = -logp.gather(-1, targets[..., None])[..., 0]  # (B, S)
    return {"max_abs_logit_diff": diff.max().item(), "mean_abs_logit_diff": diff.mean().item(),
            "kl_mean": kl.mean().item(), "kl_max": kl.max().item(),
            "top1_agreement": (approx.argmax(-1) == full.argmax(-1)).double().mean().item(),
            "ppl": math.exp(nll.mean().item()),
            "per_sample": [{"max_abs_logit_diff": diff[i].max().item(), "kl_mean": kl[i].mean().item(),
                            "ppl": math.exp(nll[i].mean().item())} for i in range(full.shape[0])]}


def decode_path_ppl(logits: torch.Tensor, targets: torch.Tensor) -> float:
    nll = -logits.double().log_softmax(-1).gather(-1, targets[..., None])[..., 0]
    return math.exp(nll.mean().item())


def speed(mla, rotated, context: torch.Tensor, steps: int, shards: int, threads: int,
          threads_per_rank: int) -> dict:
    """Greedy decode tokens/s after a prefill of `context` (1, T): full MLA and the TPLA
    simulation in one process with `threads` threads, and the `shards`-process gloo run with
    `threads_per_rank` each."""
    torch.set_num_threads(threads)
    full = decode.greedy(mla, context, steps)
    sim_model = install_tpla(copy.deepcopy(rotated), shards)
    sim = decode.greedy(sim_model, context, steps)
    del sim_model
    start = time.perf_counter()
    real = run_distributed(rotated, "greedy", shards=shards, threads_per_rank=threads_per_rank,
                           ids=context, steps=steps)
    wall = time.perf_counter() - start
    timed = steps - 1  # the first token comes from the prefill
    return {"context": context.shape[1], "steps": steps, "threads": threads,
            "threads_per_rank": threads_per_rank,
            "tokens_per_s_full_mla_1proc": timed / full["seconds"],
            "tokens_per_s_tpla_sim_1proc": timed / sim["seconds"],
            f"tokens_per_s_tpla_{shards}proc": timed / real["seconds"],
            f"wall_s_{shards}proc_incl_spawn_and_prefill": wall,
            "dist_vs_sim_max_abs_logit_diff": (real["logits"] - sim["logits"]).abs().max().item(),
            "dist_vs_sim_same_tokens": bool(torch.equal(real["tokens"], sim["tokens"])),
            "tpla_vs_full_same_tokens": bool(torch.equal(sim["tokens"], full["tokens"]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="source", default="base")
    ap.add_argument("--settings", nargs="+", default=["128+32"])
    ap.add_argument("--rotations", nargs="+", default=["none", "hadamard", "pca"])
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--nope-scales", nargs="+", default=["1", "g"],
                    help="each shard's no-RoPE logit multiplier: 1 is TPLA as described, g the "
                         "estimate-the-full-logits variant (sharded.py)")
    ap.add_argument("--calib", type=int, default=128, help="calibration samples of --calib-tokens")
    ap.add_argument("--calib-tokens", type=int, default=256)
    ap.add_argument("--samples", type=int, default=8, help="held-out samples of --length tokens")
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--prefill", type=int, default=32, help="tokens prefilled by full MLA")
    ap.add_argument("--context", type=int, default=512, help="prompt tokens for the speed run")
    ap.add_argument("--speed-steps", type=int, default=32)
    # One thread: on this shared 2-core machine two OpenMP threads run a decode step ~4x slower
    # than one (other jobs hold the cores), so one process gets one thread and each rank one.
    ap.add_argument("--threads", type=int, default=1, help="threads of the one-process runs")
    ap.add_argument("--threads-per-rank", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("docs/results/tpla/error.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    home = assets.ensure_prepared(progress=False)
    model, tokenizer, rear, source = load_source(args.source, home)
    if rear is not None:
        raise SystemExit("--from a REAR checkpoint: this script scores the causal LM alone")
    calib, _, record = corpus_calibration(tokenizer, corpus_file(home), args.calib, args.calib_tokens, args.seed)
    _, heldout_passages = split_passages(read_passages(corpus_file(home)), args.seed)
    heldout = calibration_batches(tokenizer, heldout_passages, args.samples, args.length, args.seed)  # (n, T)
    context = heldout.reshape(1, -1).repeat(1, args.context // heldout.numel() + 1)[:, :args.context]
    targets = heldout[:, args.prefill + 1:]  # what the decode steps predict
    moments = collect_kv_moments(model, calib)
    transform = get_transform("transmla")
    rows, speeds = [], []
    for text in args.settings:
        rank, rope = (int(x) for x in text.split("+"))
        cfg = TransMLAConfig(kv_lora_rank=rank, rope_dim=rope, calib_passages=args.calib,
                             calib_tokens=args.calib_tokens, seed=args.seed)
        cfg.check_model(model.config)
        start = time.perf_counter()
        mla = transform.apply(model, calib, replace(cfg), record=record, moments=moments)
        print(f"{text}: converted in {time.perf_counter() - start:.0f}s", flush=True)
        full = decode.teacher_forced(mla, heldout, args.prefill)["logits"]  # (n, S, V)
        full_ppl = decode_path_ppl(full, targets)
        rows.append({"setting": text, "rotation": "full MLA", "ppl": full_ppl})
        print(f"  full MLA decode-path ppl {full_ppl:.3f}", flush=True)
        speed_model = None
        for rotation in args.rotations:
            tcfg = TPLAConfig(shards=args.shards, rotation=rotation)
            try:
                tcfg.check_model(mla.config)
            except ValueError as exc:  # ConfigError: e.g. Hadamard on a rank not a power of two
                rows.append({"setting": text, "rotation": rotation, "skipped": str(exc)})
                print(f"  {rotation}: skipped ({exc})", flush=True)
                continue
            rotated = rotate_for_tpla(copy.deepcopy(mla), tcfg, calib=calib[:32])
            for nope_scale in [args.shards if x == "g" else float(x) for x in args.nope_scales]:
                tpla = install_tpla(copy.deepcopy(rotated), args.shards, nope_scale=float(nope_scale))
                row = {"setting": text, "rotation": rotation, "shards": args.shards, "nope_scale": nope_scale,
                       **compare(full, decode.teacher_forced(tpla, heldout, args.prefill)["logits"], targets)}
                row["ppl_ratio_vs_full_mla"] = row["ppl"] / full_ppl
                rows.append(row)
                print(f"  {rotation} nope x{nope_scale}: max |dlogit| {row['max_abs_logit_diff']:.3f} "
                      f"mean {row['mean_abs_logit_diff']:.4f} KL {row['kl_mean']:.4f} "
                      f"top1 {row['top1_agreement']:.3f} ppl {row['ppl']:.3f}", flush=True)
                del tpla
            if speed_model is None or rotation == "hadamard":
                speed_model = (rotation, rotated)
        if speed_model is not None and args.context:
            s = {"setting": text, "rotation": speed_model[0],
                 **speed(mla, speed_model[1], context, args.speed_steps, args.shards, args.threads,
                       args.threads_per_rank)}
            speeds.append(s)
            print(f"  speed: {s}", flush=True)
        del mla
    print_table(rows, speeds, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "source": source, "calibration": record.to_dict(), "heldout_samples": args.samples,
        "length": args.length, "prefill": args.prefill, "decode_steps_scored": targets.shape[1],
        "shards": args.shards, "cpu_cores": "2 (shared machine)", "threads": args.threads,
        "threads_per_rank": args.threads_per_rank, "torch": torch.__version__, "rows": rows, "speed": speeds}, indent=2) + "\n")
    print(f"wrote {args.out}")


def print_table(rows: list[dict], speeds: list[dict], args) -> None:
    head = ["setting", "rotation", "nope x", "max |dlogit|", "mean |dlogit|", "KL mean", "KL max", "top-1 agree",
            "decode ppl", "ppl x"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        if "skipped" in r:
            cells = [r["setting"], r["rotation"]] + ["n/a"] * 8
        elif r["rotation"] == "full MLA":
            cells = [r["setting"], "full MLA", "-", "0", "0", "0", "0", "1", f"{r['ppl']:.3f}", "1.000"]
        else:
            cells = [r["setting"], r["rotation"], f"{r['nope_scale']:g}", f"{r['max_abs_logit_diff']:.3f}", f"{r['mean_abs_logit_diff']:.4f}",
                     f"{r['kl_mean']:.4f}", f"{r['kl_max']:.3f}", f"{r['top1_agreement']:.3f}",
                     f"{r['ppl']:.3f}", f"{r['ppl_ratio_vs_full_mla']:.3f}"]
        print("| " + " | ".join(cells) + " |")
    if speeds:
        g = args.shards
        head = ["setting", "rotation", "context", "full MLA 1 proc tok/s", "TPLA sim 1 proc tok/s",
                f"TPLA {g} proc tok/s", f"{g} proc / full", "dist vs sim max |dlogit|", "same tokens"]
        print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
        for s in speeds:
            real = s[f"tokens_per_s_tpla_{g}proc"]
            print("| " + " | ".join([s["setting"], s["rotation"], str(s["context"]),
                                     f"{s['tokens_per_s_full_mla_1proc']:.1f}", f"{s['tokens_per_s_tpla_sim_1proc']:.1f}",
                                     f"{real:.1f}", f"{real / s['tokens_per_s_full_mla_1proc']:.2f}",
                                     f"{s['dist_vs_sim_max_abs_logit_diff']:.2e}",
                                     str(s["dist_vs_sim_same_tokens"])]) + " |")


if __name__ == "__main__":
    main()
