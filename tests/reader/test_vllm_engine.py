"""The vLLM engine against the transformers engine on the same weights, in fp32 (DESIGN: engine seam).

Weights: `checkpoints/rear-smollm2` when it exists, else the UNTRAINED RearModel wrapper around
the real SmolLM2-135M-Instruct, with its <RANK_SCORE> row set to a fixed random vector (an
all-zero row would score every passage 0 and test nothing). Either is merged to a plain fp32
checkpoint in tmp_path, which both engines load. One vLLM engine serves the whole module; the
tests that use it are marked slow (the module took 100-130 s on the shared 2-core machine, most of
it vLLM's start); the registry and dispatch tests are quick.

Tolerances: relevance logits to SCORE_ATOL, confidences to CONFIDENCE_ATOL; texts identical.
Both engines compute the same fp32 function with different kernels and batch shapes (vLLM's CPU
attention and fused ops, a different summation order), so logits differ by rounding: about 1e-5
relative (largest differences seen here: 1.3e-5 on scores of magnitude 5-8, 1.8e-5 on
confidences; docs/serving.md); the tolerances leave ~50x room for other CPUs. The confidence has
a second, systematic difference: RearReader masks the four control tokens out of the softmax,
vLLM's prompt logprobs do not (rear/vllm_reader.py), which lowers con_i by a factor
1 - p(control tokens), far below the tolerance for these weights.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from rearqa.reader.config import ReaderConfig, default_checkpoint_dir
from rearqa.types import Passage

SCORE_ATOL = 1e-3
CONFIDENCE_ATOL = 1e-3
MAX_NEW_TOKENS = 24
DATA = Path(__file__).resolve().parents[1] / "data"
# question -> the corpus id of its passage; each question reads it and the next two in CORPUS_ORDER.
EXTRA_QUESTIONS = [("Who painted the Mona Lisa?", "monalisa"),
                   ("What is the highest mountain above sea level?", "everest")]
GOLD = {"Who wrote Hamlet?": "hamlet", "What is the capital of France?": "paris",
        "What is the largest planet in the Solar System?": "jupiter"}


def _corpus() -> dict[str, Passage]:
    rows = [json.loads(line) for line in (DATA / "mini_corpus.jsonl").read_text().splitlines()]
    return {r["id"]: Passage(r["id"], r["text"], title=r["title"]) for r in rows}


def _questions() -> tuple[list[str], list[list[Passage]]]:
    """5 questions x 3 passages: the answering passage first, then two others."""
    corpus = _corpus()
    order = [i for i in corpus if i != "script"]
    questions = []
    for line in (DATA / "mini_questions.jsonl").read_text().splitlines():
        try:
            questions.append(json.loads(line)["question"])
        except json.JSONDecodeError:  # the file holds one bad line on purpose (loader tests)
            continue
    pairs = [(q, GOLD[q]) for q in questions] + EXTRA_QUESTIONS
    passages = []
    for _, gold in pairs:
        start = order.index(gold)
        passages.append([corpus[order[(start + j) % len(order)]] for j in range(3)])
    return [q for q, _ in pairs], passages


@pytest.fixture(scope="module")
def plain_checkpoint(reader_dir, tmp_path_factory) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rearqa.reader.rear import RearConfig, RearModel

    trained = default_checkpoint_dir()
    if (trained / "rear_config.json").is_file():
        model = RearModel.from_pretrained(trained, reader_dir, dtype=torch.float32)
    else:
        tokenizer = AutoTokenizer.from_pretrained(reader_dir)
        lm = AutoModelForCausalLM.from_pretrained(reader_dir, dtype=torch.float32)
        model = RearModel.from_base(lm, tokenizer, RearConfig(use_chat_template=True),
                                    base_model_dir=reader_dir)
        with torch.no_grad():
            row = torch.randn(lm.config.hidden_size, generator=torch.Generator().manual_seed(0))
            model.causal_lm.get_output_embeddings().weight[model.token_ids.rank_score] = 0.1 * row
    # A head trained as its own parameters (bias, centred features) is served as its row plus
    # rank_offset: the engines' parity below covers the offset too.
    dim = model.causal_lm.config.hidden_size
    head = model.attach_linear_head(center=0.05 * torch.randn(dim, generator=torch.Generator().manual_seed(1)))
    with torch.no_grad():
        head.bias.add_(0.7)
    return model.merge_to_plain_checkpoint(tmp_path_factory.mktemp("rear-plain"))


def test_the_served_checkpoint_carries_a_rank_offset(plain_checkpoint):
    import json

    offset = json.loads((plain_checkpoint / "rear_config.json").read_text())["config"]["rank_offset"]
    assert abs(offset) > 0.1


@pytest.fixture(scope="module")
def vllm_engine(plain_checkpoint):
    from rearqa.reader.engines.vllm_engine import VllmEngine, VllmStartError

    try:
        engine = VllmEngine(plain_checkpoint, dtype="float32")
    except VllmStartError as exc:
        pytest.skip(f"vLLM could not start on this machine: {exc}")
    yield engine
    engine.close()


def _config(**kwargs) -> ReaderConfig:
    return ReaderConfig(method="rear", dtype="float32", max_new_tokens=MAX_NEW_TOKENS, batch_size=8,
                        routing="knowledge_consistency", fallback="closed_book", **kwargs)


@pytest.fixture(scope="module")
def readers(plain_checkpoint, vllm_engine):
    """(hf, vllm) REAR readers with one threshold that splits the passages (both judgments occur)."""
    from rearqa.reader.rear.reader import RearReader
    from rearqa.reader.rear.vllm_reader import VllmRearReader

    hf = RearReader(_config(), plain_checkpoint, device="cpu")
    vllm = VllmRearReader(_config(engine="vllm"), plain_checkpoint, engine=vllm_engine)
    questions, passages = _questions()
    scores = sorted(s for r in hf.read(questions, passages, force="irrelevant", closed_book=False)
                    for s in r.scores)
    # The midpoint of the widest gap in the middle half: no score sits near the threshold.
    middle = range(len(scores) // 4, 3 * len(scores) // 4)
    gap = max(middle, key=lambda i: scores[i + 1] - scores[i])
    assert scores[gap + 1] - scores[gap] > 10 * SCORE_ATOL
    threshold = (scores[gap] + scores[gap + 1]) / 2
    for reader in (hf, vllm):
        reader.routing = dataclasses.replace(reader.routing, threshold=threshold)
    return hf, vllm


def test_engines_are_registered():
    from rearqa.reader.engines import get_engine_class
    from rearqa.reader.engines.vllm_engine import VllmEngine
    from rearqa.reader.rear.config import REAR_ENGINES
    from rearqa.registry import resolve

    assert get_engine_class("vllm") is VllmEngine
    assert resolve(REAR_ENGINES, "vllm", "REAR reader engine").__name__ == "VllmRearReader"


def test_reader_config_names_the_valid_engines():
    from rearqa.config_errors import ConfigError

    assert ReaderConfig(engine="vllm").engine == "vllm"
    with pytest.raises(ConfigError, match=r"reader.engine='tpu': choose one of \['hf', 'vllm'\]"):
        ReaderConfig(engine="tpu")


def test_kv_block_size_is_checked_and_vllm_only():
    from rearqa.config_errors import ConfigError

    assert ReaderConfig(engine="vllm", kv_block_size=32).kv_block_size == 32
    with pytest.raises(ConfigError, match=r"kv_block_size=24: must be 0 .* multiple of 16"):
        ReaderConfig(engine="vllm", kv_block_size=24)
    with pytest.raises(ConfigError, match="applies to engine 'vllm' only"):
        ReaderConfig(engine="hf", kv_block_size=32)


def test_rear_reader_follows_reader_engine(monkeypatch):
    from rearqa.reader import build_reader
    from rearqa.reader.rear.vllm_reader import VllmRearReader

    monkeypatch.setattr(VllmRearReader, "from_config",
                        classmethod(lambda cls, config, base: (cls.__name__, config.engine, base)))
    config = ReaderConfig(method="rear", engine="vllm")
    assert build_reader("rear", config, "base") == ("VllmRearReader", "vllm", "base")


@pytest.mark.slow
def test_rear_readings_match(readers):
    hf, vllm = readers
    questions, passages = _questions()
    kwargs = dict(all_confidences=True, closed_book=True)
    expected, got = hf.read(questions, passages, **kwargs), vllm.read(questions, passages, **kwargs)
    judgments = [j for r in expected for j in r.judgments]
    assert set(judgments) == {"relevant", "irrelevant"}
    for e, g in zip(expected, got, strict=True):
        assert g.scores == pytest.approx(e.scores, abs=SCORE_ATOL)
        assert g.judgments == e.judgments
        assert g.answers == e.answers
        assert g.closed_book == e.closed_book
        assert g.confidences == pytest.approx(e.confidences, abs=CONFIDENCE_ATOL)
    assert any(a for r in expected for a in r.answers)  # not all empty


@pytest.mark.slow
def test_rear_answers_route_the_same(readers):
    hf, vllm = readers
    questions, passages = _questions()
    for e, g in zip(hf.read_batch(questions, passages), vllm.read_batch(questions, passages),
                    strict=True):
        assert (g.text, g.abstained, g.from_own_knowledge) == (e.text, e.abstained,
                                                              e.from_own_knowledge)
        assert [(c.passage.id, c.judgment, c.answer) for c in g.citations] == \
               [(c.passage.id, c.judgment, c.answer) for c in e.citations]
        assert [c.relevance for c in g.citations] == pytest.approx(
            [c.relevance for c in e.citations], abs=SCORE_ATOL)


@pytest.mark.slow
def test_baseline_rag_greedy_texts_identical(plain_checkpoint, vllm_engine):
    from rearqa.reader import BaselineReader

    config = ReaderConfig(method="rag", dtype="float32", max_new_tokens=MAX_NEW_TOKENS)
    questions, passages = _questions()
    hf = BaselineReader(config, plain_checkpoint).read_batch(questions, passages)
    vllm = BaselineReader(config, plain_checkpoint, engine=vllm_engine).read_batch(questions, passages)
    assert [a.text for a in vllm] == [a.text for a in hf]
    assert all(a.text for a in hf)


@pytest.mark.slow
def test_stream_yields_the_generated_text(vllm_engine):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    pieces = list(vllm_engine.stream(messages, MAX_NEW_TOKENS))
    answer = vllm_engine.generate([messages], MAX_NEW_TOKENS)[0]
    assert "".join(pieces).strip() == answer
    # One piece per decoding step: more than one whenever the answer is more than one token
    # (the trained REAR checkpoint, when present, answers "Paris" in one).
    tokens = len(vllm_engine.tokenizer(answer, add_special_tokens=False)["input_ids"])
    assert len(pieces) >= min(2, tokens)


CONVERSATIONS = [[{"role": "user", "content": q}] for q in
                 ("What is the capital of France?", "Who wrote Hamlet?", "Name a large planet.",
                  "What colour is the sky?")]


@pytest.mark.slow
def test_a_paused_stream_does_not_block_other_requests(vllm_engine):
    """One stream is opened and left unread while another stream and a batch run to the end:
    with one caller at a time (the old lock) this would wait forever; each gets its own text."""
    import threading

    expected = vllm_engine.generate(CONVERSATIONS, MAX_NEW_TOKENS)
    got: dict[str, object] = {}

    def interleave() -> None:
        paused = vllm_engine.stream(CONVERSATIONS[0], MAX_NEW_TOKENS)
        first = next(paused)
        got["other stream"] = "".join(vllm_engine.stream(CONVERSATIONS[1], MAX_NEW_TOKENS)).strip()
        got["batch"] = vllm_engine.generate(CONVERSATIONS[2:], MAX_NEW_TOKENS)
        got["paused stream"] = (first + "".join(paused)).strip()

    worker = threading.Thread(target=interleave, daemon=True)
    worker.start()
    worker.join(600)
    assert not worker.is_alive(), "a paused stream blocked the engine"
    assert got == {"other stream": expected[1], "batch": expected[2:], "paused stream": expected[0]}


@pytest.mark.slow
def test_simultaneous_streams_and_calls_each_get_their_own_tokens(vllm_engine):
    from concurrent.futures import ThreadPoolExecutor

    expected = vllm_engine.generate(CONVERSATIONS, MAX_NEW_TOKENS)

    def streamed(messages):
        return "".join(vllm_engine.stream(messages, MAX_NEW_TOKENS)).strip()

    def alone(messages):
        return vllm_engine.generate([messages], MAX_NEW_TOKENS)[0]

    with ThreadPoolExecutor(2 * len(CONVERSATIONS)) as pool:
        streams = [pool.submit(streamed, m) for m in CONVERSATIONS]
        calls = [pool.submit(alone, m) for m in CONVERSATIONS]
        assert [f.result(600) for f in streams] == expected
        assert [f.result(600) for f in calls] == expected
    assert len(set(expected)) == len(expected)  # different answers, so a mix-up would show


@pytest.mark.slow
def test_an_abandoned_stream_is_aborted_and_the_engine_serves_on(vllm_engine):
    expected = vllm_engine.generate(CONVERSATIONS[:1], MAX_NEW_TOKENS)
    stream = vllm_engine.stream(CONVERSATIONS[1], MAX_NEW_TOKENS)
    next(stream)
    stream.close()
    assert vllm_engine.generate(CONVERSATIONS[:1], MAX_NEW_TOKENS) == expected


@pytest.mark.slow
def test_failed_start_shows_the_log_tail(plain_checkpoint, tmp_path):
    from rearqa.reader.engines.vllm_engine import VllmEngine, VllmStartError

    broken = tmp_path / "broken"
    broken.mkdir()
    for file in plain_checkpoint.iterdir():
        if file.name.startswith("tokenizer") or file.name.endswith(".jinja"):
            (broken / file.name).write_bytes(file.read_bytes())
    config = json.loads((plain_checkpoint / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "architectures": ["NoSuchModelForCausalLM"]}))
    with pytest.raises(VllmStartError, match=r"(?s)vLLM failed to start on .*broken.*Last lines of its log"):
        VllmEngine(broken, dtype="float32", log_path=tmp_path / "vllm.log")
    assert (tmp_path / "vllm.log").read_text().strip()


@pytest.mark.slow
def test_stop_rule_is_rear_readers(reader_dir):
    """vLLM stops at the first newline; `stop_index` must then stop exactly where RearReader's
    decode loop (`StopTable`) does, including rows that start with blank lines."""
    import random
    from types import SimpleNamespace

    import torch
    from transformers import AutoTokenizer

    from rearqa.reader.rear.prompting import StopTable
    from rearqa.reader.rear.vllm_reader import stop_index

    tokenizer = AutoTokenizer.from_pretrained(reader_dir)
    eos = {tokenizer.eos_token_id}
    lm = SimpleNamespace(get_output_embeddings=lambda: SimpleNamespace(
        weight=torch.empty(len(tokenizer), 0)), generation_config=SimpleNamespace(eos_token_id=None))
    table = StopTable(tokenizer, lm, torch.device("cpu"))
    words = tokenizer(["Paris", " is", ".", "\n", "\n\n", " \n", ".\n", "\nThe", " ", "  "],
                      add_special_tokens=False)["input_ids"]
    pool = sorted({t for w in words for t in w} | eos)
    rng = random.Random(0)
    for _ in range(300):
        tokens = [rng.choice(pool) for _ in range(rng.randint(1, 8))]
        done = has_text = torch.zeros(1, dtype=torch.bool)
        expected = None
        for i, token in enumerate(tokens):
            done, has_text = table.update(torch.tensor([token]), done, has_text)
            if bool(done):
                expected = i
                break
        assert stop_index(tokens, lambda t: tokenizer.decode([t]), eos) == expected, \
            [tokenizer.decode([t]) for t in tokens]
