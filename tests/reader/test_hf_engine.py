"""The transformers engine with the real SmolLM2 reader (behaviour depends on the model)."""
import pytest

from rearqa.reader import BaselineReader, ReaderConfig
from rearqa.reader.engines import ENGINES, build_engine
from rearqa.types import Passage

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reader(reader_dir):
    return BaselineReader(ReaderConfig(max_new_tokens=16, batch_size=4, dtype="float32"), reader_dir)


def test_unknown_engine_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown reader engine 'tpu'; valid engines are \['hf'"):
        build_engine("tpu")
    assert "hf" in ENGINES


def test_missing_model_dir_says_how_to_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="rearqa data prepare"):
        build_engine("hf", model_dir=tmp_path)


def test_rag_answer_uses_the_passage(reader):
    passage = Passage("p1", "Hamlet is a tragedy written by William Shakespeare around 1600.",
                      title="Hamlet")
    answer = reader.read_batch(["Who wrote Hamlet?"], [[passage]], method="rag")[0]
    assert "shakespeare" in answer.text.lower()
    assert answer.citations[0].passage.id == "p1" and not answer.from_own_knowledge
    assert answer.cited == [0]  # rag cites the passages it was given


def test_closed_book_cites_nothing_and_says_so(reader):
    answer = reader.read_batch(["What is the capital of France?"], [[]], method="closed-book")[0]
    assert "paris" in answer.text.lower()
    assert answer.citations == [] and answer.from_own_knowledge and answer.cited == []


def test_batched_generation_equals_one_at_a_time(reader):
    questions = ["What is the capital of France?", "Who painted the Mona Lisa?",
                 "How many legs does a spider have?"]
    batched = reader.read_batch(questions, [[], [], []], method="closed-book")
    single = [reader.read_batch([q], [[]], method="closed-book")[0] for q in questions]
    assert [a.text for a in batched] == [a.text for a in single]


def test_stream_yields_the_same_text_as_generate(reader):
    question = "Who painted the Mona Lisa?"
    *pieces, answer = reader.stream(question, [], method="closed-book")
    streamed = "".join(pieces).strip()
    assert streamed == reader.read_batch([question], [[]], method="closed-book")[0].text
    assert answer.text == streamed


def test_generation_stops_at_the_tokenizers_eos_even_if_the_config_names_another(reader):
    """Fine-tuned readers end answers with the tokenizer's eos; a generation config written by
    another transformers version named a different one on the GPU machine (docs/rear.md)."""
    engine = reader.engine
    eos = engine.tokenizer.eos_token_id
    saved = engine.model.generation_config.eos_token_id
    try:
        engine.model.generation_config.eos_token_id = 0  # <|endoftext|>, not <|im_end|>
        assert eos in engine._eos_ids() and 0 in engine._eos_ids()
        assert engine._generation_kwargs(4)["eos_token_id"] == sorted({0, eos})
    finally:
        engine.model.generation_config.eos_token_id = saved
