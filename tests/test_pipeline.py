"""The pipeline end to end on a small collection, with the real MiniLM, FAISS, SQLite and SmolLM2."""
from pathlib import Path

import pytest

from rearqa.config import PipelineConfig
from rearqa.pipeline import Pipeline
from rearqa.reader import QuestionError
from rearqa.reader.config import ReaderConfig
from rearqa.retriever.config import RetrieverConfig

pytestmark = pytest.mark.slow
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def pipe(scratch_home):
    config = PipelineConfig(retriever=RetrieverConfig(collection="mini"),
                            reader=ReaderConfig(max_new_tokens=16), k=2)
    pipe = Pipeline(config, home=scratch_home)
    result = pipe.collection.add_paths([DATA / "mini_corpus.jsonl"], progress=False)
    assert not result.errors
    return pipe


def test_ask_answers_from_the_collection_with_citations(pipe):
    answer = pipe.ask("Who wrote Hamlet?", k=1)
    assert "shakespeare" in answer.text.lower()
    assert [c.passage.title for c in answer.citations] == ["Hamlet"] and answer.method == "rag"


def test_citations_come_best_first(pipe):
    # (With two passages the 135M reader sometimes answers from the second one: REAR's job.)
    answer = pipe.ask("Who wrote Hamlet?")
    assert len(answer.citations) == 2 and answer.citations[0].passage.title == "Hamlet"
    assert answer.citations[0].passage.score >= answer.citations[1].passage.score


@pytest.mark.parametrize("retriever", ["dense", "bm25", "hybrid"])
def test_every_retriever_finds_the_document(pipe, retriever):
    passages = pipe.retrieve("Who wrote Hamlet?", k=1, retriever=retriever)
    assert passages[0].title == "Hamlet"


def test_filters_restrict_the_passages(pipe):
    passages = pipe.retrieve("Who wrote Hamlet?", k=3, filters={"tags": "geo"})
    assert {p.title for p in passages} == {"Mount Everest", "Paris"}


def test_ask_batch_and_closed_book(pipe):
    answers = pipe.ask_batch(["What is the capital of France?", "Who painted the Mona Lisa?"],
                             method="closed-book")
    assert [a.citations for a in answers] == [[], []]
    assert all(a.from_own_knowledge for a in answers)
    assert "paris" in answers[0].text.lower()


def test_stream_yields_passages_then_text_then_the_answer(pipe):
    events = list(pipe.stream("What is the capital of France?"))
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "passages" and kinds[-1] == "answer" and "token" in kinds
    answer = events[-1][1]
    assert answer.text and answer.citations[0].passage.title == "Paris"


def test_stream_retrieves_with_the_query_and_answers_the_question(pipe):
    events = list(pipe.stream("What is it made of?", k=1, query="What is the largest planet?",
                              history=[{"role": "user", "content": "What is the largest planet?"},
                                       {"role": "assistant", "content": "Jupiter"}]))
    assert [p.title for p in events[0][1]] == ["Jupiter"]
    assert events[-1][1].question == "What is it made of?"


def test_with_reader_shares_the_collection_and_keeps_other_settings(pipe):
    sibling = pipe.with_reader(routing="path_reliability")
    assert sibling.collection is pipe.collection and sibling.home == pipe.home
    assert sibling.config.reader.routing == "path_reliability" and sibling.config.k == pipe.config.k
    assert pipe.config.reader.routing == ""  # the original is untouched


@pytest.mark.parametrize("question", ["", "   ", "x" * 5000])
def test_bad_questions_get_a_clear_error(pipe, question):
    with pytest.raises(QuestionError):
        pipe.ask(question)
