"""The REAR reader on vLLM: the same prompts, judgments, answers and routing as RearReader.

vLLM serves a MERGED plain checkpoint (`RearModel.merge_to_plain_checkpoint`): LoRA merged and the
linear rank head stored as the `<RANK_SCORE>` output row beside an all-zero `<RANK_REF>` row, so
stock vLLM computes it with no patching (rear/model.py). Per batch of questions, three vLLM calls:

    1. score     every passage prompt of every question in ONE call, the same token ids
                 RearReader builds (`PromptBuilder`), with max_tokens=1, logprobs=2 and
                 allowed_token_ids=[<RANK_SCORE>, <RANK_REF>], logprobs read after that
                 restriction (logprobs_mode="processed_logprobs"). Over two allowed logits z_s,
                 z_r the log-softmax gives lp_s - lp_r = z_s - z_r exactly (the normaliser
                 cancels), and z_s - z_r = h . w - h . 0; plus the checkpoint's rank_offset
                 (the trained head's bias and centring) that is the rank head's logit.
    2. generate  prompt + the judgment token chosen by the threshold, greedy, the six control
                 tokens banned (`bad_words`, each a single special token, so its logit is -inf
                 as in RearReader), stopped at eos or the end of the first non-empty line; the
                 first line is kept. Prefix caching reuses the scoring call's prefill.
    3. confidence  (knowledge-consistency, relevant rows only) prompt + <IRRELEVANT> + answer with
                 prompt_logprobs: con_i = exp(mean log p(answer token)).

One difference from RearReader is known and bounded: RearReader's confidence re-reads the answer
with the four non-judgment control tokens masked out of the softmax; vLLM's prompt logprobs are
over the whole vocabulary, so each token's log-probability here is lower by
-log(1 - p(control tokens)) >= 0. The tokens are never generated and their mass is tiny, so con_i
agrees to a stated tolerance (tests/reader/test_vllm_engine.py), not bit for bit.

vLLM's stop strings stop at the FIRST newline, where RearReader skips leading blank lines; so a
row that stopped on a newline before any text is resubmitted with what it generated appended
(prefix-cached), until RearReader's own stop rule (`_stop_index`) says it has stopped.
"""
from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path

from rearqa.reader.base import first_line
from rearqa.reader.config import ReaderConfig, resolve_checkpoint
from rearqa.reader.rear.checkpoint import read_meta
from rearqa.reader.rear.base import CLOSED_BOOK_ROW, Reading, RearReaderBase
from rearqa.reader.rear.tokens import rear_token_ids
from rearqa.types import Passage


class VllmRearReader(RearReaderBase):
    """REAR answers computed by vLLM from a merged plain REAR checkpoint."""

    def __init__(self, config: ReaderConfig, checkpoint, base_model_dir: str | Path | None = None,
                 engine=None) -> None:
        """`checkpoint`: a REAR checkpoint directory (plain or LoRA) or a RearModel; a LoRA
        checkpoint or a model is merged to a plain checkpoint in a temporary directory first.
        `engine`: a VllmEngine already serving the merged checkpoint (tests share one)."""
        from transformers import AutoTokenizer

        from rearqa.config_base import from_dict
        from rearqa.reader.rear.config import RearConfig

        self._tmp: Path | None = None
        plain = self._plain_checkpoint(checkpoint, base_model_dir)
        rear_config = from_dict(RearConfig, read_meta(plain)["config"], "rear")
        if rear_config.head != "linear":
            from rearqa.config_errors import ConfigError

            raise ConfigError(f"{plain} has a {rear_config.head!r} rank head, which only the hf "
                              "engine runs; vLLM serves the 'linear' head (an output-layer row). "
                              "Use reader.engine 'hf' for this checkpoint")
        super().__init__(config, rear_config, AutoTokenizer.from_pretrained(plain))
        self.checkpoint_dir = plain
        self.rank_offset = rear_config.rank_offset  # the linear head's bias and centring
        self.token_ids = rear_token_ids(self.tokenizer)
        self._eos = _eos_ids(plain, self.tokenizer)
        self._texts: dict[int, str] = {}  # token id -> its text, for the stop rule
        if engine is None:
            from rearqa.reader.engines.vllm_engine import VllmEngine

            engine = VllmEngine(plain, dtype=config.dtype, threads=config.threads,
                                block_size=config.kv_block_size or None)
        self.engine = engine
        self._check_control_tokens()

    @classmethod
    def from_config(cls, config: ReaderConfig, base_model_dir: str | Path) -> "VllmRearReader":
        return cls(config, resolve_checkpoint(config), base_model_dir)

    def _plain_checkpoint(self, checkpoint, base_model_dir) -> Path:
        from rearqa.reader.rear.model import RearModel

        if not isinstance(checkpoint, RearModel) and read_meta(checkpoint)["kind"] == "plain":
            return Path(checkpoint)
        model = checkpoint
        if not isinstance(model, RearModel):
            import torch

            model = RearModel.from_pretrained(checkpoint, base_model_dir, dtype=torch.float32)
        self._tmp = Path(tempfile.mkdtemp(prefix="rearqa-rear-merged-"))
        return model.merge_to_plain_checkpoint(self._tmp)

    def _check_control_tokens(self) -> None:
        """bad_words bans what the engine's tokenizer makes of each string: it must be the one id."""
        engine_tokenizer = self.engine.llm.get_tokenizer()
        for token_id in self._banned_ids():
            text = self.tokenizer.convert_ids_to_tokens(token_id)
            if engine_tokenizer.encode(text, add_special_tokens=False) != [token_id]:
                raise ValueError(f"vLLM's tokenizer does not read {text!r} as the one token "
                                 f"{token_id}, so bad_words could not ban it")

    def _banned_ids(self) -> list[int]:
        return self.token_ids.suppressed_ids(include_judgments=True)

    def close(self) -> None:
        """Stop vLLM and remove the merged checkpoint this reader wrote (if any)."""
        self.engine.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    # ------------------------------------------------------------------ one batch

    def _read_chunk(self, questions: list[str], passages: list[list[Passage]], force: str | None,
                    all_confidences: bool, closed_book: bool) -> list[Reading]:
        owners, inputs = self._layout(questions, passages, closed_book)
        if not inputs:
            return [Reading([], [], [], [], None) for _ in questions]
        prompts = [x.prompt_ids for x in inputs]
        passage_rows = [r for r, (_, pi) in enumerate(owners) if pi != CLOSED_BOOK_ROW]
        scores = self.score([prompts[r] for r in passage_rows])
        judgments = self._judge(owners, passage_rows, scores, force)
        answers = self.generate([p + [self.token_ids.judgment(j)] for p, j in zip(prompts, judgments)])
        need = self._need_confidence(passage_rows, judgments, all_confidences)
        confidences = dict(zip(need, self.confidences([prompts[r] for r in need],
                                                      [answers[r] for r in need])))
        return self._collect(len(questions), owners, passage_rows, scores, judgments, answers,
                             confidences)

    def score(self, prompts: list[list[int]]) -> list[float]:
        """Relevance logits of scoring prompts (each ending in <GENERATE_SCORE>), one vLLM call."""
        if not prompts:
            return []
        ids = self.token_ids
        params = self.engine.greedy_params(1, suppress=False, logprobs=2,
                                           allowed_token_ids=[ids.rank_score, ids.rank_ref])
        scores = []
        for out in self.engine.run(prompts, params):
            logprobs = out.outputs[0].logprobs[0]  # {token id: Logprob} of the one step
            scores.append(logprobs[ids.rank_score].logprob - logprobs[ids.rank_ref].logprob
                          + self.rank_offset)
        return scores

    def generate(self, prompts: list[list[int]]) -> list[str]:
        """Greedy first-line answers after prompts that end in their judgment token."""
        budget = self.config.max_new_tokens
        generated: list[list[int]] = [[] for _ in prompts]
        active = list(range(len(prompts)))
        banned = self.tokenizer.convert_ids_to_tokens(self._banned_ids())
        while active:
            # detokenize: vLLM matches stop strings on the text it decodes.
            params = [self.engine.greedy_params(budget - len(generated[r]), detokenize=True,
                                                stop=["\n"], stop_token_ids=sorted(self._eos),
                                                bad_words=banned) for r in active]
            outputs = self.engine.run([prompts[r] + generated[r] for r in active], params)
            again = []
            for r, out in zip(active, outputs):
                generated[r] += out.outputs[0].token_ids
                stop = self._stop_index(generated[r])
                if stop is not None:
                    generated[r] = generated[r][:stop + 1]
                elif out.outputs[0].finish_reason == "stop" and len(generated[r]) < budget:
                    again.append(r)  # a newline before any text: RearReader reads on
            active = again
        return [first_line(self.tokenizer.decode(g, skip_special_tokens=True)) for g in generated]

    def _stop_index(self, tokens: list[int]) -> int | None:
        return stop_index(tokens, self._token_text, self._eos)

    def _token_text(self, token: int) -> str:
        if token not in self._texts:  # as StopTable: special tokens count as text
            self._texts[token] = self.tokenizer.decode([token])
        return self._texts[token]

    def confidences(self, prompts: list[list[int]], answers: list[str]) -> list[float]:
        """con_i = exp(mean log p(a_i | prompt_i, <IRRELEVANT>)), from vLLM's prompt logprobs.

        The answer is tokenized alone, as RearReader and training do; an empty answer gets 0.
        """
        if not prompts:
            return []
        encoded = self.tokenizer(answers, add_special_tokens=False,
                                 split_special_tokens=True)["input_ids"]
        rows = [p + [self.token_ids.irrelevant] + a for p, a in zip(prompts, encoded)]
        outputs = self.engine.run(rows, self.engine.greedy_params(1, suppress=False,
                                                                  prompt_logprobs=0))
        values = []
        for out, row, answer in zip(outputs, rows, encoded):
            start = len(row) - len(answer)
            logprobs = [out.prompt_logprobs[i][row[i]].logprob for i in range(start, len(row))]
            values.append(math.exp(sum(logprobs) / len(logprobs)) if logprobs else 0.0)
        return values


def stop_index(tokens: list[int], token_text, eos: set[int]) -> int | None:
    """Where RearReader's decode loop (`StopTable`) stops a row, or None: at eos, at a token
    that ends a non-empty line, or at a newline once the row has text."""
    has_text = False
    for i, token in enumerate(tokens):
        text = token_text(token)
        if token in eos or ("\n" in text and (has_text or text.split("\n")[0].strip() != "")):
            return i
        has_text = has_text or text.strip() != ""
    return None


def _eos_ids(model_dir: Path, tokenizer) -> set[int]:
    """The ids RearReader stops at: the tokenizer's eos and the generation config's."""
    from rearqa.reader.engines import eos_token_ids

    file = model_dir / "generation_config.json"
    source = json.loads(file.read_text()) if file.is_file() else json.loads(
        (model_dir / "config.json").read_text())
    return eos_token_ids(tokenizer, source.get("eos_token_id"))

