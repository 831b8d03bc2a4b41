"""Fine-tuned baselines: the baseline prompts over a LoRA fine-tuned base model.

`rag-ft` is standard RAG (the top-k passages in the chat prompt) and `closed-book-ft` the
closed-book prompt, each read by the base model with a PEFT LoRA adapter merged into its
weights. They are the controls for REAR: the same base, the same fine-tuning budget, no rank
head or routing. The adapter directory is what `peft.PeftModel.save_pretrained` writes
(adapter_config.json + adapter_model.safetensors).

On engine hf the adapter is merged (`merge_and_unload`) in float32 and the model then cast to
the reader dtype, so generation costs exactly what the base model costs; with reader.hf_adapter
'unmerged' the weights stay as loaded and the adapted layers run the fused LoRA op
(adapters/unmerged.py). On engine vllm
(reader.vllm_adapter) it is merged the same way into a plain checkpoint cached under the rearqa
home (the default), or served unmerged through vLLM's LoRA support (one `LoRARequest` with every
request): a plain PEFT LoRA as it is, a rearqa method through its plain-LoRA export
(adapters/vllm_lora.py, which also says what is refused).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from rearqa.reader.base import StreamItem
from rearqa.reader.baseline import BaselineReader
from rearqa.reader.config import ReaderConfig, resolve_adapter, resolve_device
from rearqa.reader.engines.hf import HFEngine
from rearqa.types import Answer, Passage

# fine-tuned method -> the baseline prompt family it uses
PROMPT_METHOD = {"rag-ft": "rag", "closed-book-ft": "closed-book"}


def merge_lora(model, adapter_dir: str | Path, mode: str = "merged"):
    """`model` with the saved LoRA-family adapter in `adapter_dir` (any registered method:
    rearqa.reader.adapters.load_adapter) merged into its weights, or, mode 'unmerged', run
    beside them (adapters/unmerged.py)."""
    from rearqa.reader.adapters import load_adapter
    from rearqa.reader.adapters.unmerged import served_lm

    return served_lm(load_adapter(model, Path(adapter_dir)), mode)


class DeviceHFEngine(HFEngine):
    """The transformers engine on a chosen device, optionally with a LoRA adapter merged in."""

    def __init__(self, model_dir: str | Path, dtype: str = "float32", threads: int = 0,
                 trust_remote_code: bool = False, device: str = "auto",
                 adapter: str | Path | None = None, tpla=None, tpla_calib: str = "",
                 backbone: str = "", adapter_mode: str = "merged") -> None:
        # Merge in float32, then cast: merging into bf16 weights would round the LoRA delta.
        # TPLA's rotation goes in after the merge (the adapter was trained on the unrotated latent).
        if tpla is not None:
            from rearqa.reader.backbone.tpla.engine import check_tpla_manifest

            check_tpla_manifest(model_dir, tpla)
        full = adapter or tpla is not None
        super().__init__(model_dir, "float32" if full else dtype, threads, trust_remote_code)
        if adapter:
            from rearqa.reader.engines import saved_eos_id

            self.model = merge_lora(self.model, adapter, adapter_mode).eval()
            eos = saved_eos_id(self.tokenizer, adapter)  # what its answers end with
            if eos is not None:
                self.extra_eos.add(eos)
        if tpla is not None:
            self._use_tpla(tpla, tpla_calib)
            self.model.eval()
        self.model.to(device=resolve_device(device), dtype=getattr(torch, dtype))  # DTYPES are torch names
        if backbone:  # over the merged weights: SpAtten changes how they attend, not what they are
            self._use_backbone(backbone)
        self.adapter = str(adapter) if adapter else None

    def _tokenize(self, texts: list[str], **kwargs):
        return super()._tokenize(texts, **kwargs).to(self.model.device)


def vllm_engine(config: ReaderConfig, model_dir: str | Path, adapter: str | Path | None = None):
    """A VllmEngine serving the reader's adapter (`adapter`, else resolve_adapter's) over
    `model_dir` as reader.vllm_adapter says: merged into a cached plain checkpoint, or through
    vLLM's LoRA support (exported once first if it is a rearqa method); the checkpoint alone when
    its adapter was merged before a conversion. Checked before vLLM starts."""
    from rearqa.reader.adapters.vllm_lora import merged_checkpoint_dir, vllm_lora_dir
    from rearqa.reader.engines.vllm_engine import VllmEngine

    adapter = adapter or resolve_adapter(config)
    extra = {"block_size": config.kv_block_size} if config.kv_block_size else {}
    if adapter and config.vllm_adapter == "merged":
        merged = merged_checkpoint_dir(adapter, model_dir, trust_remote_code=config.trust_remote_code)
        return VllmEngine(merged, config.dtype, config.threads, config.trust_remote_code,
                          eos_from=adapter, **extra)
    served = vllm_lora_dir(adapter, model_dir, trust_remote_code=config.trust_remote_code) \
        if adapter else None
    return VllmEngine(model_dir, config.dtype, config.threads, config.trust_remote_code,
                      adapter=served, **extra)


class FinetunedReader:
    """rag-ft / closed-book-ft: BaselineReader's prompts over the LoRA fine-tuned weights, on
    reader.engine hf (adapter merged) or vllm (adapter served as a LoRA); `device`: hf only."""

    reader_per_method = True  # each method has its own adapter: a pipeline keeps one reader per method

    def __init__(self, config: ReaderConfig, model_dir: str | Path, adapter: str | Path | None = None,
                 device: str = "auto", engine=None) -> None:
        self.config = config
        if engine is None and config.engine == "vllm":
            engine = vllm_engine(config, model_dir, adapter)
        elif engine is None:
            adapter = adapter or resolve_adapter(config)
            engine = DeviceHFEngine(model_dir, config.dtype, config.threads,
                                    config.trust_remote_code, device, adapter, config.tpla(),
                                    config.tp_calib, config.backbone, config.hf_adapter)
        self.base = BaselineReader(config, model_dir, engine=engine)

    @classmethod
    def from_config(cls, config: ReaderConfig, base_model_dir: str | Path) -> "FinetunedReader":
        return cls(config, base_model_dir)

    @property
    def engine(self):
        return self.base.engine

    def close(self) -> None:
        """Stop the engine (vLLM's processes; nothing for transformers)."""
        self.base.close()

    def _method(self, method: str | None) -> str:
        method = method or self.config.method
        if method not in PROMPT_METHOD:
            raise ValueError(f"FinetunedReader serves {list(PROMPT_METHOD)}, not {method!r}")
        return method

    @staticmethod
    def _relabel(answer: Answer, method: str) -> Answer:
        answer.method = method
        return answer

    def read_batch(self, questions: list[str], passages: list[list[Passage]],
                   method: str | None = None) -> list[Answer]:
        method = self._method(method)
        answers = self.base.read_batch(questions, passages, PROMPT_METHOD[method])
        return [self._relabel(a, method) for a in answers]

    def stream(self, question: str, passages: list[Passage], method: str | None = None,
               history: list[dict] | None = None) -> Iterator[StreamItem]:
        method = self._method(method)
        for item in self.base.stream(question, passages, PROMPT_METHOD[method], history):
            yield self._relabel(item, method) if isinstance(item, Answer) else item
