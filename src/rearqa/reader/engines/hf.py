"""The transformers reader engine: batched greedy generation through the chat template.

Prompts are left-padded so a batch of questions decodes in one `generate` call; streaming runs
`generate` in a worker thread and yields text as `TextIteratorStreamer` releases it.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import torch

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class HFEngine:
    """A causal LM loaded from a transformers checkpoint directory (converted backbones too)."""

    def __init__(self, model_dir: str | Path, dtype: str = "float32", threads: int = 0,
                 trust_remote_code: bool = False, tpla=None, tpla_calib: str = "",
                 backbone: str = "") -> None:
        """`tpla` (tpla.config.TPLAConfig, or None for the model as it is): decode an MLA reader
        with TPLA's g shards simulated in one process; `tpla_calib` a calibration file for its
        PCA rotation ("" = the conversion's own calibration text); `backbone` an inference-time
        backbone with its budgets ("spatten:tokens=0.6,..."; "" = none) run over the weights."""
        from transformers import AutoTokenizer

        from rearqa.reader.backbone.loading import load_causal_lm
        from rearqa.reader.engines import checkpoint_dir

        model_dir = checkpoint_dir(model_dir)
        if threads:
            torch.set_num_threads(threads)
        self.model_dir = model_dir
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
        self.tokenizer.padding_side = "left"  # generation appends on the right
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if tpla is not None:
            from rearqa.reader.backbone.tpla.engine import check_tpla_manifest

            check_tpla_manifest(model_dir, tpla)  # a plain checkpoint is refused before it loads
        # TPLA's rotation is folded in float32 and the model cast after: one rounding, not two.
        self.model = load_causal_lm(model_dir, _DTYPES["float32" if tpla else dtype], trust_remote_code)
        self.tpla = None
        if tpla is not None:
            self._use_tpla(tpla, tpla_calib)
            self.model.to(_DTYPES[dtype])
        self.model.eval()
        self.backbone = ""  # the inference-time backbone's label, once one is installed
        if backbone:
            self._use_backbone(backbone)
        self.extra_eos: set[int] = set()  # ids an adapter's training ended answers with
        self._lock = threading.Lock()  # one generate at a time: the model is not re-entrant

    def _use_tpla(self, tpla, calib_file: str) -> None:
        """Fold TPLA's rotation into the (float32) model and install its g-shard decode."""
        from rearqa.reader.backbone.tpla.engine import prepare_tpla

        self.model = prepare_tpla(self.model, self.model_dir, self.tokenizer, tpla, calib_file)
        self.tpla = tpla

    def _use_backbone(self, text: str) -> None:
        """Run the model with the inference-time backbone `text` names (SpAtten: its attention)."""
        from rearqa.reader.backbone import inference_backbone

        method, cfg = inference_backbone(text)
        self.model = method.apply(self.model, cfg)
        self.backbone = method.label(cfg)
        self._backbone_method = method

    def render(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _encode(self, batch: list[list[dict]]) -> dict[str, torch.Tensor]:
        return self._tokenize([self.render(messages) for messages in batch])

    def _tokenize(self, texts: list[str], **kwargs) -> dict[str, torch.Tensor]:
        # The chat template already holds the special tokens.
        return self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False, **kwargs)

    def _generation_kwargs(self, max_new_tokens: int) -> dict:
        return dict(max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
                    top_k=None, pad_token_id=self.tokenizer.pad_token_id,
                    eos_token_id=self._eos_ids())

    def _eos_ids(self) -> list[int]:
        from rearqa.reader.engines import eos_token_ids

        return sorted(eos_token_ids(self.tokenizer, self.model.generation_config.eos_token_id)
                      | self.extra_eos)

    @torch.inference_mode()
    def generate(self, batch: list[list[dict]], max_new_tokens: int = 32) -> list[str]:
        """Greedy answers for a batch of chat conversations."""
        if not batch:
            return []
        with self._lock:  # the tokenizer too: padding=True sets its state, not thread-safe
            inputs = self._encode(batch)
            output = self.model.generate(**inputs, **self._generation_kwargs(max_new_tokens))
        new_tokens = output[:, inputs["input_ids"].shape[1]:]  # (B, T_new)
        return [t.strip() for t in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]

    @torch.inference_mode()
    def generate_traced(self, batch: list[list[dict]], max_new_tokens: int = 32) -> list[tuple]:
        """Greedy answers with what the inference-time backbone did to each prompt:
        (answer, cost dict, trace) per conversation; ({}, None) without a backbone. The trace
        (SpAtten: evidence.PromptTrace) holds the rendered prompt and which of its tokens were
        pruned where, for an evaluation to check against gold answers."""
        if not self.backbone:
            return [(text, {}, None) for text in self.generate(batch, max_new_tokens)]
        if not batch:
            return []
        texts = [self.render(messages) for messages in batch]
        with self._lock:
            inputs = self._tokenize(texts, return_offsets_mapping=True)
            spans = inputs.pop("offset_mapping").tolist()  # (B, S, 2), left-padded like the ids
            with self._backbone_method.track(self.model) as history:
                output = self.model.generate(**inputs, **self._generation_kwargs(max_new_tokens))
        mask = inputs["attention_mask"]
        offsets = [row[len(row) - n:] for row, n in zip(spans, mask.sum(dim=1).tolist())]
        new_tokens = output[:, inputs["input_ids"].shape[1]:]  # (B, T_new)
        answers = [t.strip() for t in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
        records = self._backbone_method.records(history, mask, texts, offsets)
        linear = linear_flops_per_token(self.model)
        for cost, _ in records:
            cost["linear_flops_per_token"] = linear
        return [(answer, cost, trace) for answer, (cost, trace) in zip(answers, records)]

    def stream(self, messages: list[dict], max_new_tokens: int = 32) -> Iterator[str]:
        """Yield the greedy answer to one conversation piece by piece."""
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True,
                                        timeout=600)
        errors: list[BaseException] = []

        def work() -> None:
            try:
                with self._lock, torch.inference_mode():
                    inputs = self._encode([messages])
                    self.model.generate(**inputs, streamer=streamer,
                                        **self._generation_kwargs(max_new_tokens))
            except BaseException as exc:  # re-raised in the caller's thread below
                errors.append(exc)
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        yield from streamer
        thread.join()
        if errors:
            raise errors[0]

    def close(self) -> None:
        """Nothing to stop: the model lives in this process (VllmEngine's counterpart stops vLLM's)."""

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def linear_flops_per_token(model: torch.nn.Module) -> float:
    """2 x the weights of `model`'s linear layers (lm_head included, and an unmerged adapter's
    factors: every matrix a linear layer holds): the matmul FLOPs every token costs outside
    attention, whatever an inference-time backbone prunes there."""
    return 2.0 * sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)
                     for p in m.parameters(recurse=False) if p.dim() == 2)
