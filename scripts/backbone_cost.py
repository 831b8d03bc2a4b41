"""The cost columns of the backbone table for several readers in one run: parameters, KV bytes,
FLOPs per generated token, decode speed on transformers and on vLLM, and vLLM's greedy parity.

    python scripts/backbone_cost.py --reader rag-ft=checkpoints/rag-ft-smollm2 \
        --reader kvm1=readers/ragft-kvm1 --reader lp=readers/pruned \
        --out docs/results/backbone_cost/cost-cpu.json

A reader is NAME=DIR: a transformers checkpoint, a `rearqa convert` output (backbone.json) or a
PEFT adapter, which is merged into the bundled reader and saved to a temporary directory first, so
both engines load every reader as a plain directory. The first reader is the baseline; every
ratio is reader / baseline, both measured in this run.

Per reader:
- parameters: all of them, and those of the decoder layers' self_attn + mlp;
- KV bytes per token in bf16 over all layers (the transform's own count for a converted reader);
- FLOPs of one decode step (one new token, `--context` tokens already cached), counted by
  torch's FlopCounterMode with eager attention (CPU SDPA is not in its registry, so its
  attention matmuls would go uncounted);
- transformers decode tokens/s: batch 1, fp32, `--threads`, a prompt of `--context` random token
  ids, then `--new-tokens` greedy steps on the cache (no stop on eos, so every reader decodes as
  many); decode time excludes the prefill. Readers alternate across `--repeats`; the median is
  reported with every repeat;
- vLLM (one subprocess per reader, so each starts fresh and frees its memory): a batch of
  `--vllm-prompts` such prompts, generating `--new-tokens` with ignore_eos. The batch is
  prefilled once into the prefix cache; then each of `--repeats` times it is run to 1 and to N
  tokens, both recomputing only each prompt's last block, and decode tokens/s is
  batch x (N - 1) / (time to N - time to 1). (Without the cache, the ~25 s prefill's noise on a
  shared machine swamped the ~6 s of decode: one repeat came out negative.)
- parity: greedy tokens of vLLM and transformers (fp32) on `--parity-prompts` chat prompts
  (nq-dev-select questions in the "short" closed-book template, tokenized by the baseline's
  tokenizer), `--parity-tokens` each: prompts matching exactly, else the first divergence.
Timings are wall-clock on a shared machine: the load average is recorded beside each repeat.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rearqa.asset_paths import package_version  # noqa: E402
from rearqa.reader.backbone.base import dense_kv_bytes_per_token  # noqa: E402

KV_DTYPE = torch.bfloat16  # what the KV bytes column is counted in (the reader serves in bf16)
FIRST_ORDINARY_ID = 100  # random prompt ids start above SmolLM2's special tokens (0..16)


# -- readers -------------------------------------------------------------------------------------

def parse_reader(spec: str) -> tuple[str, Path]:
    """(NAME, DIR) of `--reader NAME=DIR`; SystemExit naming what is accepted otherwise."""
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise SystemExit(f"--reader {spec!r}: expected NAME=DIR (e.g. rag-ft=checkpoints/rag-ft-smollm2)")
    directory = Path(path).expanduser()
    if not (directory / "config.json").is_file() and not (directory / "adapter_config.json").is_file():
        raise SystemExit(f"--reader {spec!r}: {directory} has no config.json (a transformers "
                         "checkpoint or a rearqa convert output) nor adapter_config.json (a PEFT adapter)")
    return name, directory


def parse_readers(specs: list[str]) -> list[tuple[str, Path]]:
    readers = [parse_reader(spec) for spec in specs]
    names = [name for name, _ in readers]
    if len(set(names)) != len(names):
        raise SystemExit(f"--reader names must differ; got {names}")
    return readers


def plain_dir(directory: Path, scratch: Path) -> Path:
    """`directory` itself, or for a PEFT adapter the bundled reader with it merged (float32), saved
    under `scratch` with the adapter's tokenizer."""
    if not (directory / "adapter_config.json").is_file():
        return directory
    from rearqa import assets
    from rearqa.app.convert_cmd import load_source

    model, tokenizer, _, _ = load_source(directory, assets.ensure_prepared(progress=False))
    out = scratch / directory.name
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


# -- counted columns -----------------------------------------------------------------------------

def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """All parameters (tied embeddings once) and those of the layers' self_attn + mlp."""
    layers = model.model.layers
    attn_mlp = sum(p.numel() for layer in layers for part in (layer.self_attn, layer.mlp)
                   for p in part.parameters())
    return {"total": sum(p.numel() for p in model.parameters()), "attn_mlp": attn_mlp}


def kv_bytes_per_token(model_dir: Path, config) -> int:
    """KV cache bytes of one token, all layers, bf16: the transform's count for a converted reader
    (its cache may not be the dense one), the dense GQA count otherwise."""
    from rearqa.reader.backbone import get_transform
    from rearqa.reader.backbone.manifest import read_manifest

    manifest = read_manifest(model_dir)
    if manifest is None:
        return dense_kv_bytes_per_token(config, KV_DTYPE)
    return get_transform(manifest.transform).kv_bytes_per_token(config, KV_DTYPE)


@torch.inference_mode()
def decode_step_flops(model: torch.nn.Module, context: int, seed: int = 0) -> int:
    """FLOPs of one forward of 1 new token over a cache holding `context` tokens (batch 1)."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import DynamicCache

    was = model.config._attn_implementation
    model.set_attn_implementation("eager")  # its attention is matmuls the counter sees
    try:
        ids = random_prompts(1, context + 1, model.config.vocab_size, seed)
        cache = DynamicCache(config=model.config)
        model(input_ids=ids[:, :context], past_key_values=cache, use_cache=True, logits_to_keep=1)
        with FlopCounterMode(display=False) as counter:
            model(input_ids=ids[:, context:], past_key_values=cache, use_cache=True)
        return counter.get_total_flops()
    finally:
        model.set_attn_implementation(was)


def random_prompts(batch: int, tokens: int, vocab_size: int, seed: int) -> torch.Tensor:
    """(batch, tokens) token ids drawn uniformly above the special tokens, the same for a seed."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(FIRST_ORDINARY_ID, vocab_size, (batch, tokens), generator=generator)


# -- transformers speed and greedy tokens --------------------------------------------------------

@torch.inference_mode()
def decode_speed(model: torch.nn.Module, prompt: torch.Tensor, new_tokens: int) -> dict:
    """Greedy decode of `new_tokens` after `prompt` (1, T) on a cache: the prefill (which yields
    the first token) and the new_tokens - 1 decode steps are timed apart."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    cpu_start, start = time.process_time(), time.perf_counter()
    logits = model(input_ids=prompt, past_key_values=cache, use_cache=True, logits_to_keep=1).logits
    token = logits[:, -1].argmax(-1, keepdim=True)
    prefill = time.perf_counter() - start
    for _ in range(new_tokens - 1):
        logits = model(input_ids=token, past_key_values=cache, use_cache=True).logits
        token = logits[:, -1].argmax(-1, keepdim=True)
    decode = time.perf_counter() - start - prefill
    # cpu_s / wall_s: the cores this process got (near --threads on a quiet machine)
    return {"prefill_s": prefill, "decode_s": decode, "tokens_per_s": (new_tokens - 1) / decode,
            "cpu_s": time.process_time() - cpu_start, "wall_s": prefill + decode,
            "load_avg_1m": os.getloadavg()[0]}


@torch.inference_mode()
def hf_greedy(model: torch.nn.Module, prompts: list[list[int]], tokens: int) -> list[list[int]]:
    out = []
    for ids in prompts:
        seq = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        out.append(seq[0, len(ids):].tolist())
    return out


def parity_prompts(tokenizer, n: int) -> list[list[int]]:
    """Chat prompts of the first `n` nq-dev-select questions (a dev split: no test question)."""
    from rearqa import assets
    from rearqa.asset_paths import qa_file
    from rearqa.reader.prompts import build_messages, get_prompt

    path = qa_file("nq-dev-select", assets.ensure_prepared(progress=False))
    with path.open(encoding="utf-8") as f:
        questions = [json.loads(line)["question"] for _, line in zip(range(n), f)]
    template = get_prompt("short")
    return [tokenizer.apply_chat_template(build_messages(q, None, template, 0), tokenize=True,
                                          add_generation_prompt=True, return_dict=False)
            for q in questions]


def first_divergence(a: list[int], b: list[int]) -> int | None:
    """The first position where the token lists differ, None when they are equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def parity(hf: list[list[int]], vllm: list[list[int]]) -> dict:
    divergence = [first_divergence(a, b) for a, b in zip(hf, vllm)]
    return {"prompts": len(hf), "exact": sum(d is None for d in divergence),
            "first_divergence": divergence, "hf_tokens": hf, "vllm_tokens": vllm}


# -- vLLM, one subprocess per reader -------------------------------------------------------------

def run_vllm(model_dir: Path, job: dict, scratch: Path, index: int) -> dict:
    """The worker's result on `model_dir`, or {"error": ...} with the end of its log when vLLM
    refused the reader or failed (the table shows it; the other readers still run)."""
    from rearqa.config_errors import ConfigError
    from rearqa.reader.backbone.loading import check_vllm_servable

    try:
        check_vllm_servable(model_dir)
    except ConfigError as exc:
        return {"error": str(exc)}
    job_file, out_file, log_file = (scratch / f"vllm-{index}.{ext}" for ext in ("job.json", "out.json", "log"))
    job_file.write_text(json.dumps({**job, "model": str(model_dir)}))
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
           "VLLM_CPU_OMP_THREADS_BIND": f"0-{job['threads'] - 1}" if job["threads"] > 1 else "0"}
    start = time.perf_counter()
    with log_file.open("w") as log:
        run = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--vllm-worker",
                              str(job_file), "--out", str(out_file)], env=env, stdout=log,
                             stderr=subprocess.STDOUT, timeout=job["timeout_s"])
    if run.returncode != 0:
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-25:])
        return {"error": f"vLLM worker exited {run.returncode} on {model_dir}:\n{tail}"}
    return {**json.loads(out_file.read_text()), "process_s": time.perf_counter() - start}


def vllm_worker(job_file: Path, out_file: Path) -> None:
    """Start vLLM on the job's model, time its batch at 1 and at N new tokens, and take the greedy
    tokens of the parity prompts; write the result to `out_file`."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    job = json.loads(job_file.read_text())
    start = time.perf_counter()
    llm = LLM(model=job["model"], skip_tokenizer_init=True, dtype=job["dtype"], seed=0,
              max_model_len=job["max_model_len"], enable_prefix_caching=True,
              enforce_eager=job["enforce_eager"])
    startup = time.perf_counter() - start

    def greedy(prompts: list[list[int]], tokens: int) -> tuple[list[list[int]], float]:
        params = SamplingParams(temperature=0.0, max_tokens=tokens, min_tokens=tokens, ignore_eos=True,
                                detokenize=False)
        begin = time.perf_counter()
        outputs = llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in prompts], params, use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in outputs], time.perf_counter() - begin

    speed, new_tokens = job["speed_prompts"], job["new_tokens"]
    _, prefill = greedy(speed, 1)  # the batch's prefill, into the prefix cache the timed runs reuse
    repeats = []
    for _ in range(job["repeats"]):
        _, to_first = greedy(speed, 1)  # prefill of the whole batch and its first token
        tokens, to_last = greedy(speed, new_tokens)
        generated = sum(len(t) for t in tokens)
        repeats.append({"first_token_s": to_first, "all_tokens_s": to_last, "generated": generated,
                        "decode_tokens_per_s": (generated - len(speed)) / (to_last - to_first),
                        "load_avg_1m": os.getloadavg()[0]})
    parity_tokens, _ = greedy(job["parity_prompts"], job["parity_tokens"]) if job["parity_prompts"] else ([], 0.0)
    out_file.write_text(json.dumps({
        "startup_s": startup, "batch_prefill_s": prefill, "repeats": repeats,
        "decode_tokens_per_s": statistics.median(r["decode_tokens_per_s"] for r in repeats),
        "parity_tokens": parity_tokens}) + "\n")


# -- the run -------------------------------------------------------------------------------------

def measure_static(models: dict, dirs: dict, context: int) -> dict[str, dict]:
    return {name: {"params": parameter_counts(model), "kv_bytes_per_token": kv_bytes_per_token(dirs[name], model.config),
                   "decode_step_flops": decode_step_flops(model, context),
                   "kv_heads": model.config.num_key_value_heads, "heads": model.config.num_attention_heads,
                   "intermediate": model.config.intermediate_size}
            for name, model in models.items()}


def measure_hf_speed(models: dict, prompt: torch.Tensor, new_tokens: int, repeats: int) -> dict[str, dict]:
    """Readers alternate within each repeat, so a slow spell of the machine hits all of them."""
    runs = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            runs[name].append(decode_speed(model, prompt, new_tokens))
    return {name: {"tokens_per_s": statistics.median(r["tokens_per_s"] for r in reps),
                   "prefill_s": statistics.median(r["prefill_s"] for r in reps), "repeats": reps}
            for name, reps in runs.items()}


def ratio(value, base):
    return None if value is None or not base else value / base


def rows_of(result: dict, baseline: str) -> list[dict]:
    """One flat row per reader with its ratios to the baseline's row."""
    rows = [row_of(name, r) for name, r in result["readers"].items()]
    base = next(row for row in rows if row["reader"] == baseline)
    for row in rows:
        for key in ("params_m", "attn_mlp_m", "kv_bytes", "gflops", "hf_tps", "vllm_tps"):
            row[key + "_x"] = ratio(row[key], base[key])
    return rows


def row_of(name: str, r: dict) -> dict:
    vllm = r.get("vllm", {})
    return {"reader": name, "params_m": r["params"]["total"] / 1e6, "attn_mlp_m": r["params"]["attn_mlp"] / 1e6,
            "kv_bytes": r["kv_bytes_per_token"], "gflops": r["decode_step_flops"] / 1e9,
            "hf_tps": r["hf"]["tokens_per_s"], "vllm_tps": vllm.get("decode_tokens_per_s"),
            "vllm_error": vllm.get("error"), "parity": r.get("parity")}


def markdown_table(rows: list[dict], context: int) -> str:
    def num(value, fmt):
        return "-" if value is None else format(value, fmt)

    lines = [f"| reader | params (M) | attn+MLP (M) | x | KV bytes/token (bf16) | x | GFLOPs/token @{context} | x "
             "| CPU tok/s (hf) | x | vLLM tok/s | x | vLLM parity |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r["parity"]
        par = "-" if not p else f"{p['exact']}/{p['prompts']} exact" + (
            "" if p["exact"] == p["prompts"] else " (diverge at " + ", ".join(
                str(d) for d in p["first_divergence"] if d is not None) + ")")
        vllm = "failed" if r["vllm_error"] else num(r["vllm_tps"], ".1f")
        lines.append(f"| {r['reader']} | {r['params_m']:.2f} | {r['attn_mlp_m']:.2f} | {r['attn_mlp_m_x']:.2f} "
                     f"| {r['kv_bytes']:,} | {r['kv_bytes_x']:.2f} | {r['gflops']:.3f} | {r['gflops_x']:.2f} "
                     f"| {r['hf_tps']:.1f} | {r['hf_tps_x']:.2f} | {vllm} | {num(r['vllm_tps_x'], '.2f')} | {par} |")
    return "\n".join(lines)


def machine(threads: int) -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "threads": threads, "python": platform.python_version(),
            "torch": torch.__version__, "transformers": package_version("transformers"),
            "vllm": package_version("vllm-cpu") or package_version("vllm")}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reader", action="append", default=[], metavar="NAME=DIR",
                    help="a reader (repeat); the first is the baseline")
    ap.add_argument("--context", type=int, default=1000, help="tokens in the cache / prompt")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--vllm-prompts", type=int, default=8, help="batch of prompts vLLM generates for")
    ap.add_argument("--vllm-dtype", default="float32", help="float32: the parity check's dtype")
    ap.add_argument("--vllm-eager", action="store_true", help="enforce_eager (skip torch.compile)")
    ap.add_argument("--vllm-timeout", type=int, default=900, help="seconds per reader's vLLM process")
    ap.add_argument("--skip-vllm", action="store_true")
    ap.add_argument("--parity-prompts", type=int, default=4)
    ap.add_argument("--parity-tokens", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--note", default="", help="free text kept in the JSON (what the readers are)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--vllm-worker", type=Path, help=argparse.SUPPRESS)  # internal: one reader's vLLM side
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.vllm_worker:
        return vllm_worker(args.vllm_worker, args.out)
    if not args.reader:
        raise SystemExit("give at least one --reader NAME=DIR (the first is the baseline)")
    readers = parse_readers(args.reader)
    if args.new_tokens < 2:
        raise SystemExit(f"--new-tokens {args.new_tokens}: at least 2 (decode time excludes the first token)")
    torch.set_num_threads(args.threads)
    from transformers import AutoTokenizer

    from rearqa.reader.backbone.loading import load_causal_lm

    with tempfile.TemporaryDirectory(prefix="backbone-cost-") as scratch:
        scratch = Path(scratch)
        dirs = {name: plain_dir(directory, scratch) for name, directory in readers}
        models = {name: load_causal_lm(d, torch.float32).eval() for name, d in dirs.items()}
        vocab = {name: m.config.vocab_size for name, m in models.items()}
        if len(set(vocab.values())) != 1:
            raise SystemExit(f"readers differ in vocabulary size {vocab}: one prompt cannot serve them all")
        baseline = readers[0][0]
        print(f"counting parameters, KV bytes and decode-step FLOPs at context {args.context}", flush=True)
        result = {"readers": measure_static(models, dirs, args.context)}
        prompts = random_prompts(max(args.vllm_prompts, 1), args.context, vocab[baseline], args.seed)
        print(f"transformers decode speed, {args.repeats} alternating repeats", flush=True)
        for name, hf in measure_hf_speed(models, prompts[:1], args.new_tokens, args.repeats).items():
            result["readers"][name]["hf"] = hf
        parity_ids = parity_prompts(AutoTokenizer.from_pretrained(dirs[baseline]), args.parity_prompts)
        hf_tokens = {name: hf_greedy(model, parity_ids, args.parity_tokens) for name, model in models.items()}
        del models
        gc.collect()
        if not args.skip_vllm:
            job = {"dtype": args.vllm_dtype, "enforce_eager": args.vllm_eager, "threads": args.threads,
                   "max_model_len": args.context + args.new_tokens + 16, "repeats": args.repeats,
                   "new_tokens": args.new_tokens, "speed_prompts": prompts.tolist(),
                   "parity_prompts": parity_ids, "parity_tokens": args.parity_tokens,
                   "timeout_s": args.vllm_timeout}
            for index, (name, d) in enumerate(dirs.items()):  # files by index: a name may hold '/'
                print(f"vLLM on {name}", flush=True)
                vllm = run_vllm(d, job, scratch, index)
                result["readers"][name]["vllm"] = vllm
                if "error" in vllm:
                    print(f"vLLM failed on {name}: {vllm['error']}", file=sys.stderr, flush=True)
                else:
                    result["readers"][name]["parity"] = parity(hf_tokens[name], vllm.pop("parity_tokens"))
    result["settings"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                          if k != "vllm_worker"}
    result["readers_given"] = {name: str(directory) for name, directory in readers}
    result["baseline"] = baseline
    result["note"] = args.note
    result["machine"] = machine(args.threads)
    result["prompts"] = (f"speed: {args.context} random token ids (seed {args.seed}, ids >= {FIRST_ORDINARY_ID}), "
                         "the same for every reader; parity: nq-dev-select questions, 'short' closed-book chat prompt")
    rows = rows_of(result, baseline)
    result["table"] = rows
    table = markdown_table(rows, args.context)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
