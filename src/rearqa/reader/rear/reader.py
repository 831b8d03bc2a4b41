"""The REAR reader: score every passage, answer under its judgment, route to one answer.

REAR (Wang et al., 2024, "REAR: A Relevance-Aware Retrieval-Augmented Framework for Open-Domain
Question Answering") reads each of a question's k passages separately:

    1. score     ONE batched forward over the prompts `{passage}<BEGIN_QUERY>{q}<GENERATE_SCORE>`
                 of all passages of all questions in the batch (left padded) gives the relevance
                 logits s_i (RearModel's rank head) and, kept, the prompts' KV cache
    2. generate  append `<RELEVANT>` if s_i > threshold else `<IRRELEVANT>` and decode greedily,
                 all rows in one decode loop that starts from the scoring pass's cache, so every
                 prompt is prefilled once; control tokens are suppressed; first line kept
    3. route     `routing.route`: path_reliability (argmax s_i) or knowledge_consistency (argmax
                 s_i + gamma * con_i over the relevant passages), con_i = exp(-mean CE) of the
                 whole answer a_i re-read after `<IRRELEVANT>`: one batched forward of
                 `<IRRELEVANT> a_i` over a copy of the prompt cache, relevant rows only
    4. fallback  when nothing clears the threshold: closed_book (answer from the model's own
                 knowledge) or abstain (Answer.abstained, empty text)

Closed-book fallback: the REAR model reads the REAR prompt with an EMPTY passage and the
`<IRRELEVANT>` judgment. That is the situation REAR's noise-resistant training teaches (answer
from your own knowledge when told the passage is irrelevant), so it is in-distribution for the
trained model, unlike the base chat closed-book prompt; and it costs one short extra row per
question in the same forward and decode as the passages instead of a second generate call.

`RearReaderBase` (base.py) holds what does not depend on the engine (prompt rows, judgments,
routing, the reader seam); `RearReader` computes steps 1-3 with transformers, `VllmRearReader`
(vllm_reader.py) with vLLM; `reader.engine` picks one (REAR_ENGINES in reader/rear/config.py).

The decode loop is written out (not `generate`) because it continues from the scoring pass's
cache with per-row position ids; it is greedy, stops a row at eos or at the end of its first
non-empty line (the answer is that line), and stops when every row has stopped.
"""
from __future__ import annotations

import contextlib
import copy
from pathlib import Path

import torch

from rearqa.reader.base import first_line
from rearqa.reader.config import ReaderConfig, resolve_checkpoint, resolve_device
from rearqa.reader.engines.hf import linear_flops_per_token
from rearqa.reader.rear.base import CLOSED_BOOK_ROW, Reading, RearReaderBase
from rearqa.reader.rear.config import REAR_ENGINES
from rearqa.reader.rear.heads import find_score_positions, positions_from_mask
from rearqa.reader.rear.inputs import collate_rear_inputs
from rearqa.reader.rear.model import RearModel
from rearqa.reader.rear.prompting import StopTable
from rearqa.reader.rear.routing import answer_confidence, token_logprobs
from rearqa.registry import resolve
from rearqa.types import Passage


class RearReader(RearReaderBase):
    """REAR answers with per-passage relevance, judgment and answer in the citations (transformers)."""

    def __init__(self, config: ReaderConfig, model_dir_or_checkpoint: str | Path | RearModel,
                 base_model_dir: str | Path | None = None, device: str = "auto") -> None:
        """`model_dir_or_checkpoint`: a REAR checkpoint directory (RearModel.save_pretrained or
        merge_to_plain_checkpoint), or a RearModel already built (e.g. an untrained wrapper).
        `base_model_dir`: the base model of a LoRA checkpoint, when not where it was trained."""
        if config.threads:
            torch.set_num_threads(config.threads)
        model = model_dir_or_checkpoint
        if not isinstance(model, RearModel):
            model = RearModel.from_pretrained(model, base_model_dir, dtype=torch.float32)
        if model.is_lora:
            from rearqa.reader.adapters.unmerged import served_lm

            model.lm = served_lm(model.lm, config.hf_adapter)
            model.check_ref_row_zero()
        super().__init__(config, model.config, model.tokenizer)
        self.model = model.to(device=resolve_device(device), dtype=getattr(torch, config.dtype)).eval()
        self.device = next(model.parameters()).device
        pad = self.tokenizer.pad_token_id
        self.pad_id = self.tokenizer.eos_token_id if pad is None else pad
        self._banned = torch.tensor(model.suppressed_token_ids(include_judgments=True),
                                    device=self.device)
        self._masked = torch.tensor(model.suppressed_token_ids(), device=self.device)
        self._stops = StopTable(self.tokenizer, model.causal_lm, self.device)
        self.backbone = ""  # an inference-time backbone's label (SpAtten), once installed
        if config.backbone:
            self._use_backbone(config.backbone)

    def _use_backbone(self, text: str) -> None:
        """Run the causal LM with the inference-time backbone `text` names: scoring, judgment and
        answer all read the pruned attention, so the rank head judges what is left."""
        from rearqa.reader.backbone import inference_backbone

        method, cfg = inference_backbone(text)
        method.apply(self.model.causal_lm, cfg)
        self.backbone = method.label(cfg)
        self._backbone_method = method
        # per token, outside attention, whatever the backbone prunes; the weights do not change
        self._linear_flops = linear_flops_per_token(self.model.causal_lm)

    @classmethod
    def from_config(cls, config: ReaderConfig, base_model_dir: str | Path) -> RearReaderBase:
        """The reader of `config.checkpoint` (default: <repo>/checkpoints/rear-smollm2) on the
        engine `config.engine` names (REAR_ENGINES)."""
        if config.engine != "hf":
            engine_cls = resolve(REAR_ENGINES, config.engine, "REAR reader engine")
            return engine_cls.from_config(config, base_model_dir)
        return cls(config, resolve_checkpoint(config), base_model_dir)

    @torch.inference_mode()
    def _read_chunk(self, questions: list[str], passages: list[list[Passage]], force: str | None,
                    all_confidences: bool, closed_book: bool) -> list[Reading]:
        owners, inputs = self._layout(questions, passages, closed_book)
        if not inputs:
            return [Reading([], [], [], [], None) for _ in questions]
        batch = {name: t.to(self.device) for name, t in
                 collate_rear_inputs(inputs, self.pad_id, padding_side="left").items()}
        passage_rows = [r for r, (_, pi) in enumerate(owners) if pi != CLOSED_BOOK_ROW]
        with self._tracked() as history:  # an inference-time backbone's counters: prefill + answers
            scores, cache = self.score_with_cache(batch, passage_rows)

            judgments = self._judge(owners, passage_rows, scores, force)
            need = self._need_confidence(passage_rows, judgments, all_confidences)
            # The decode loop extends the cache in place; confidences need the prompts alone, of
            # the rows that need them.
            prompt_cache = pruning = None
            if need:
                prompt_cache = copy.deepcopy(cache)
                prompt_cache.batch_select_indices(torch.tensor(need, device=self.device))
                pruning = self._saved_pruning()

            first = torch.tensor([self.model.token_ids.judgment(j) for j in judgments],
                                 device=self.device)
            answers = self._greedy(cache, batch["attention_mask"], first)
            del cache
        confidences: dict[int, float] = {}
        if need:
            self._restore_pruning(pruning, need)
            values = self._confidences(prompt_cache, batch["attention_mask"][need],
                                       [answers[r] for r in need])
            confidences = dict(zip(need, values))
        costs = self._backbone_method.costs(history, batch["attention_mask"]) if self.backbone else None
        readings = self._collect(len(questions), owners, passage_rows, scores, judgments, answers,
                                 confidences, costs)
        if costs:  # per token, not per row: the same for every row, so not summed
            for reading in readings:
                reading.cost["linear_flops_per_token"] = self._linear_flops
        return readings

    def _tracked(self):
        """A context collecting what the inference-time backbone did over the scoring prefill and
        the answer decode (not the confidence pass, a second continuation of some rows): one
        generation, its counters per row (`costs`); without a backbone, an empty list."""
        if not self.backbone:
            return contextlib.nullcontext([])
        return self._backbone_method.track(self.model.causal_lm)

    def _saved_pruning(self):
        """With SpAtten: what the prefill pruned, for the confidence pass that continues the
        prompts a second time (after the greedy answers continued them once)."""
        if not self.backbone:
            return None
        from rearqa.reader.backbone.spatten.attention import saved_state

        return saved_state(self.model.causal_lm)

    def _restore_pruning(self, saved, rows: list[int]) -> None:
        if saved is not None:
            from rearqa.reader.backbone.spatten.attention import restore_state

            restore_state(self.model.causal_lm, saved, rows)

    def score_with_cache(self, batch: dict[str, torch.Tensor], rows: list[int]):
        """`RearModel.score` of `rows` of a left-padded batch, plus the KV cache of ALL rows.

        The same computation as `RearModel.score` (final post-norm hidden state at
        <GENERATE_SCORE>, position ids from the mask, the model's rank head) with the cache kept,
        so generation continues from it instead of prefilling the prompts again.
        """
        ids, mask = batch["input_ids"], batch["attention_mask"]
        positions = find_score_positions(ids, mask, self.model.token_ids.generate_score)
        out = self.model.causal_lm.get_decoder()(
            input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask),
            use_cache=True)
        if not rows:
            return [], out.past_key_values
        sel = torch.tensor(rows, device=self.device)
        pool = batch["passage_mask"][sel] if self.model.rank_head is not None else None
        # RearModel's own head read-out (shared, not copied), on the selected rows.
        scores = self.model.rank_logits(out.last_hidden_state[sel], positions[sel], mask[sel], pool, None)
        return scores.tolist(), out.past_key_values

    def _greedy(self, cache, prompt_mask: torch.Tensor, first: torch.Tensor) -> list[str]:
        """Greedy answers after the forced first tokens `first` (B,), from the prompts' cache."""
        lm = self.model.causal_lm
        rows = first.shape[0]
        mask = prompt_mask
        position = prompt_mask.sum(dim=-1, keepdim=True)  # (B, 1) next position id
        token = first[:, None]  # (B, 1)
        done = torch.zeros(rows, dtype=torch.bool, device=self.device)
        has_text = torch.zeros_like(done)
        steps = []
        for _ in range(self.config.max_new_tokens):
            mask = torch.cat([mask, mask.new_ones(rows, 1)], dim=1)
            logits = lm(input_ids=token, attention_mask=mask, position_ids=position,
                        past_key_values=cache, use_cache=True).logits[:, -1]  # (B, V)
            logits[:, self._banned] = float("-inf")
            nxt = torch.where(done, self.pad_id, logits.argmax(dim=-1))
            steps.append(nxt)
            done, has_text = self._stops.update(nxt, done, has_text)
            if bool(done.all()):
                break
            token, position = nxt[:, None], position + 1
        texts = self.tokenizer.batch_decode(torch.stack(steps, dim=1).tolist(),
                                            skip_special_tokens=True)
        return [first_line(t) for t in texts]

    def _confidences(self, cache, prompt_mask: torch.Tensor, answers: list[str]) -> list[float]:
        """con_i = exp(mean log p(a_i | prompt_i, <IRRELEVANT>)) in one batched forward.

        The answer is tokenized alone, as `build_rear_input` tokenizes training answers, and
        control-token logits are masked as in `RearModel.forward`.
        """
        encoded = self.tokenizer(answers, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        width = 1 + max(len(a) for a in encoded)
        irrelevant = self.model.token_ids.irrelevant
        ids = [[irrelevant, *a] + [self.pad_id] * (width - 1 - len(a)) for a in encoded]
        ids = torch.tensor(ids, device=self.device)  # (R, L), right padded
        cont = torch.tensor([[1] * (1 + len(a)) + [0] * (width - 1 - len(a)) for a in encoded],
                            device=self.device)
        mask = torch.cat([prompt_mask, cont], dim=1)
        position = prompt_mask.sum(dim=-1, keepdim=True) + torch.arange(width, device=self.device)
        logits = self.model.causal_lm(input_ids=ids, attention_mask=mask, position_ids=position,
                                      past_key_values=cache, use_cache=True).logits  # (R, L, V)
        logits[..., self._masked] = float("-inf")
        answer_mask = cont.bool()
        answer_mask[:, 0] = False  # the judgment token is given, not scored
        return answer_confidence(token_logprobs(logits, ids), answer_mask).tolist()
