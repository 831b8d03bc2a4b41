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

`RearReaderBase` holds what does not depend on the engine (prompt rows, judgments, routing, the
reader seam); `RearReader` computes steps 1-3 with transformers, `VllmRearReader` (vllm_reader.py)
with vLLM; `reader.engine` picks one (REAR_ENGINES).

The decode loop is written out (not `generate`) because it continues from the scoring pass's
cache with per-row position ids; it is greedy, stops a row at eos or at the end of its first
non-empty line (the answer is that line), and stops when every row has stopped.
"""
from __future__ import annotations

import copy
import dataclasses
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from rearqa.reader.baseline import first_line
from rearqa.reader.config import ReaderConfig, resolve_checkpoint, resolve_device
from rearqa.reader.engines import eos_token_ids
from rearqa.reader.rear.heads import find_score_positions, positions_from_mask
from rearqa.reader.rear.inputs import RearInput, build_rear_input, collate_rear_inputs
from rearqa.reader.rear.model import RearModel
from rearqa.reader.rear.routing import RoutingConfig, answer_confidence, route, token_logprobs
from rearqa.reader.rear.tokens import rear_token_ids
from rearqa.registry import resolve
from rearqa.types import Answer, Citation, Passage

METHOD = "rear"
# reader.engine -> the REAR reader class that runs on it (lazy: vLLM is imported only when asked).
REAR_ENGINES: dict[str, str] = {
    "hf": "rearqa.reader.rear.reader:RearReader",
    "vllm": "rearqa.reader.rear.vllm_reader:VllmRearReader",
}
CLOSED_BOOK_ROW = -1  # passage index of a question's no-passage row
# Token cuts of the REAR prompt, after the word cut of `passage_text`: the same as training's
# (rearqa.training.config: max_passage_tokens, max_question_tokens), REAR's own 300-token budget.
MAX_PASSAGE_TOKENS = 200
MAX_QUESTION_TOKENS = 64


def passage_text(passage: Passage, max_words: int) -> str:
    """What a REAR prompt shows of a passage: title line, then the text cut to `max_words` words.

    Training examples must be built with this same function, so the model reads at inference
    exactly what it was trained on.
    """
    text = " ".join(passage.text.split()[:max_words])
    return f"{passage.title}\n{text}" if passage.title else text


@dataclass
class Reading:
    """Everything REAR computed for one question's passages (before routing)."""

    scores: list[float]  # relevance logit per passage
    judgments: list[str]  # judgment token each answer was conditioned on
    answers: list[str]  # per-passage answer (first line)
    confidences: list[float | None]  # con_i of answers[i] after <IRRELEVANT>; None = not computed
    closed_book: str | None = None  # the no-passage answer, when it was computed


class RearReaderBase:
    """What every REAR engine shares: the reader seam, batching, the row layout and routing.

    An engine subclass loads its model and implements `_read_chunk` (score, generate, confidences
    for one batch of questions) with the helpers below, so the prompts, judgments and readings
    are the same whichever engine computes them.
    """

    def __init__(self, config: ReaderConfig, stored_routing: RoutingConfig, tokenizer,
                 use_chat_template: bool) -> None:
        self.config = config
        self.routing = self._routing(stored_routing)
        self.tokenizer = tokenizer
        self._prompts = _PromptBuilder(tokenizer, use_chat_template)
        self._lock = threading.Lock()  # one batch at a time: the model is not re-entrant
        self._last: Answer | None = None  # the answer stream() computed, for make_answer()

    def _routing(self, stored: RoutingConfig) -> RoutingConfig:
        """The checkpoint's routing (threshold, gamma), with the reader config's overrides."""
        overrides = {name: value for name, value in (("method", self.config.routing),
                                                     ("fallback", self.config.fallback)) if value}
        return dataclasses.replace(stored, **overrides)

    def _method(self, method: str | None) -> str:
        method = method or METHOD
        if method != METHOD:
            raise ValueError(f"RearReader serves method {METHOD!r}, not {method!r}")
        return method

    # ------------------------------------------------------------------ the seam

    def read_batch(self, questions: list[str], passages: list[list[Passage]],
                   method: str | None = None) -> list[Answer]:
        """One Answer per question; `reader.batch_size` questions (all their passages) at a time."""
        self._method(method)
        readings = self.read(questions, passages)
        return [self.answer(q, p, r) for q, p, r in zip(questions, passages, readings)]

    def stream(self, question: str, passages: list[Passage], method: str | None = None,
               history: list[dict] | None = None) -> Iterator[str]:
        """Yield the routed answer in word pieces. REAR chooses among complete per-passage
        answers, so the answer is computed first. Chat `history` is not used: each passage is
        read with the question alone, as REAR was trained."""
        self._method(method)
        self._last = self.read_batch([question], [passages])[0]
        words = self._last.text.split(" ")
        for i, word in enumerate(words):
            yield word if i == len(words) - 1 else word + " "

    def make_answer(self, question: str, text: str, passages: list[Passage], method: str) -> Answer:
        """The Answer `stream` just produced for this question and passages (else read it now)."""
        self._method(method)
        last = self._last
        if (last is not None and last.question == question and last.text == text.strip()
                and [c.passage.id for c in last.citations] == [p.id for p in passages]):
            return last
        return self.read_batch([question], [passages])[0]

    def answer(self, question: str, passages: list[Passage], reading: Reading) -> Answer:
        """Route one question's reading to its Answer (citations: every passage, in order)."""
        decision = route(reading.scores, reading.answers, reading.confidences, self.routing)
        citations = [Citation(p, relevance=s, judgment=j, answer=a) for p, s, j, a in
                     zip(passages, reading.scores, decision.judgments, reading.answers)]
        if decision.mode == "passage":
            return Answer(question, decision.answer, citations, method=METHOD)
        if decision.mode == "abstain":
            return Answer(question, "", citations, method=METHOD, abstained=True)
        if reading.closed_book is None:
            raise RuntimeError("closed-book fallback without a closed-book answer (internal error)")
        return Answer(question, reading.closed_book, citations, method=METHOD,
                      from_own_knowledge=True)

    # ------------------------------------------------------------------ reading

    def read(self, questions: list[str], passages: list[list[Passage]], force: str | None = None,
             all_confidences: bool = False, closed_book: bool | None = None) -> list[Reading]:
        """Score, generate and (where routing needs them) compute confidences, batch by batch.

        force: None (judgment from the threshold), "relevant" or "irrelevant" (every passage
        answered under that judgment: threshold selection). all_confidences: con_i for every
        passage, not only the relevant ones under knowledge-consistency. closed_book: compute
        the no-passage answer (default: when the fallback is closed_book).
        """
        if len(questions) != len(passages):
            raise ValueError(f"{len(questions)} questions but {len(passages)} passage lists")
        if force not in (None, "relevant", "irrelevant"):
            raise ValueError(f"force={force!r}: choose None, 'relevant' or 'irrelevant'")
        closed_book = self.routing.fallback == "closed_book" if closed_book is None else closed_book
        readings: list[Reading] = []
        size = self.config.batch_size
        for start in range(0, len(questions), size):
            with self._lock:
                readings += self._read_chunk(questions[start:start + size],
                                             passages[start:start + size], force,
                                             all_confidences, closed_book)
        return readings

    def _read_chunk(self, questions: list[str], passages: list[list[Passage]], force: str | None,
                    all_confidences: bool, closed_book: bool) -> list[Reading]:
        raise NotImplementedError

    # ------------------------------------------------------------------ shared row logic

    def _layout(self, questions: list[str], passages: list[list[Passage]], closed_book: bool
                ) -> tuple[list[tuple[int, int]], list[RearInput]]:
        """One scoring prompt per passage (and per question's no-passage row when closed_book).

        owners[r] = (question index, passage index or CLOSED_BOOK_ROW) of prompt row r.
        """
        owners, texts = [], []
        for qi, ps in enumerate(passages):
            rows = [passage_text(p, self.config.max_passage_words) for p in ps]
            for pi, text in [*enumerate(rows), *([(CLOSED_BOOK_ROW, "")] if closed_book else [])]:
                owners.append((qi, pi))
                texts.append(text)
        return owners, self._prompts.build(texts, questions, [qi for qi, _ in owners])

    def _judge(self, owners: list[tuple[int, int]], passage_rows: list[int], scores: list[float],
               force: str | None) -> list[str]:
        """The judgment of every row; the closed-book row is told "irrelevant"."""
        judgments = ["irrelevant"] * len(owners)
        for r, s in zip(passage_rows, scores):
            judgments[r] = force or ("relevant" if s > self.routing.threshold else "irrelevant")
        return judgments

    def _need_confidence(self, passage_rows: list[int], judgments: list[str],
                         all_confidences: bool) -> list[int]:
        """Rows whose con_i routing needs: the relevant ones under knowledge-consistency."""
        return [r for r in passage_rows if all_confidences or (
            self.routing.method == "knowledge_consistency" and judgments[r] == "relevant")]

    @staticmethod
    def _collect(n_questions: int, owners: list[tuple[int, int]], passage_rows: list[int],
                 scores: list[float], judgments: list[str], answers: list[str],
                 confidences: dict[int, float]) -> list[Reading]:
        readings = [Reading([], [], [], [], None) for _ in range(n_questions)]
        score_of = dict(zip(passage_rows, scores))
        for r, (qi, pi) in enumerate(owners):
            reading = readings[qi]
            if pi == CLOSED_BOOK_ROW:
                reading.closed_book = answers[r]
                continue
            reading.scores.append(score_of[r])
            reading.judgments.append(judgments[r])
            reading.answers.append(answers[r])
            reading.confidences.append(confidences.get(r))
        return readings


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
        if model.is_lora:  # merge for speed: serving pays only for the base matmuls
            model.lm = model.lm.merge_and_unload()
            model.check_ref_row_zero()
        super().__init__(config, model.config.routing, model.tokenizer, model.config.use_chat_template)
        self.model = model.to(device=resolve_device(device), dtype=getattr(torch, config.dtype)).eval()
        self.device = next(model.parameters()).device
        pad = self.tokenizer.pad_token_id
        self.pad_id = self.tokenizer.eos_token_id if pad is None else pad
        self._banned = torch.tensor(model.suppressed_token_ids(include_judgments=True),
                                    device=self.device)
        self._masked = torch.tensor(model.suppressed_token_ids(), device=self.device)
        self._stops = _StopTable(self.tokenizer, model.causal_lm, self.device)

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
        scores, cache = self.score_with_cache(batch, passage_rows)

        judgments = self._judge(owners, passage_rows, scores, force)
        need = self._need_confidence(passage_rows, judgments, all_confidences)
        # The decode loop extends the cache in place; confidences need the prompts alone, of the
        # rows that need them.
        prompt_cache = None
        if need:
            prompt_cache = copy.deepcopy(cache)
            prompt_cache.batch_select_indices(torch.tensor(need, device=self.device))

        first = torch.tensor([self.model.token_ids.judgment(j) for j in judgments], device=self.device)
        answers = self._greedy(cache, batch["attention_mask"], first)
        del cache
        confidences: dict[int, float] = {}
        if need:
            values = self._confidences(prompt_cache, batch["attention_mask"][need],
                                       [answers[r] for r in need])
            confidences = dict(zip(need, values))
        return self._collect(len(questions), owners, passage_rows, scores, judgments, answers,
                             confidences)

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
        # _rank is RearModel's own head read-out (shared, not copied), on the selected rows.
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


class _PromptBuilder:
    """`build_rear_input` scoring prompts for a whole batch at once.

    The layout is build_rear_input's own, `frame + passage + <BEGIN_QUERY> + question + frame +
    <GENERATE_SCORE>`, with the frame read off one build_rear_input call; what changes is the
    cost: every passage text of the batch is tokenized in one call and each question once, where
    build_rear_input re-renders the chat template and re-reads the vocabulary for every row (the
    largest CPU cost of a REAR batch on a GPU machine). Tests check the two agree row for row.
    """

    def __init__(self, tokenizer, use_chat_template: bool) -> None:
        self.tokenizer = tokenizer
        empty = build_rear_input(tokenizer, "", "", use_chat_template=use_chat_template)
        ids = empty.input_ids
        self.begin_query = rear_token_ids(tokenizer).begin_query
        cut = ids.index(self.begin_query)
        self.before, self.after, self.generate_score = ids[:cut], ids[cut + 1:-1], ids[-1]

    def _encode(self, texts: list[str], limit: int) -> list[list[int]]:
        if not texts:
            return []
        ids = self.tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        return [row[:limit] for row in ids]

    def build(self, passage_texts: list[str], questions: list[str], question_of_row: list[int]
              ) -> list[RearInput]:
        passages = self._encode(passage_texts, MAX_PASSAGE_TOKENS)
        queries = self._encode(questions, MAX_QUESTION_TOKENS)
        inputs = []
        for passage, qi in zip(passages, question_of_row):
            ids = [*self.before, *passage, self.begin_query, *queries[qi], *self.after,
                   self.generate_score]
            passage_mask = [False] * len(self.before) + [True] * len(passage)
            passage_mask += [False] * (len(ids) - len(passage_mask))
            inputs.append(RearInput(ids, [False] * len(ids), passage_mask, len(ids) - 1))
        return inputs


class _StopTable:
    """Per-token facts for stopping a row: eos, or the end of its first non-empty line."""

    def __init__(self, tokenizer, lm, device: torch.device) -> None:
        rows = lm.get_output_embeddings().weight.shape[0]
        texts = tokenizer.batch_decode([[i] for i in range(min(rows, len(tokenizer)))])
        texts += [""] * (rows - len(texts))  # padded output rows no token maps to
        eos = eos_token_ids(tokenizer, getattr(getattr(lm, "generation_config", None),
                                               "eos_token_id", None))
        table = lambda values: torch.tensor(values, dtype=torch.bool, device=device)  # noqa: E731
        self.eos = table([i in eos for i in range(rows)])
        self.newline = table(["\n" in t for t in texts])
        self.ends_line = table(["\n" in t and t.split("\n")[0].strip() != "" for t in texts])
        self.text = table([t.strip() != "" for t in texts])

    def update(self, tokens: torch.Tensor, done: torch.Tensor, has_text: torch.Tensor):
        """(done, has_text) after each row emitted `tokens` (B,)."""
        stop = self.eos[tokens] | self.ends_line[tokens] | (self.newline[tokens] & has_text)
        return done | stop, has_text | self.text[tokens]
