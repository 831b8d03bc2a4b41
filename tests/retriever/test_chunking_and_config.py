import pytest

from rearqa.config_errors import ConfigError
from rearqa.retriever import RetrieverConfig
from rearqa.retriever.chunking import chunk_spans, chunk_text, indexed_text, page_of


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def test_short_text_is_one_chunk_and_empty_text_none():
    assert chunk_spans(0, 100, 20) == []
    assert chunk_spans(1, 100, 20) == [(0, 1)]
    assert chunk_spans(100, 100, 20) == [(0, 100)]


def test_windows_overlap_and_cover_every_word():
    spans = chunk_spans(250, 100, 20)
    assert spans == [(0, 100), (80, 180), (160, 250)]
    for (a0, a1), (b0, _) in zip(spans, spans[1:]):
        assert a1 - b0 == 20  # overlap
    chunks = chunk_text(words(250), 100, 20)
    assert [c.n for c in chunks] == [0, 1, 2]
    assert chunks[1].text.split()[0] == "w80" and chunks[1].start_word == 80
    assert chunks[-1].text.split()[-1] == "w249"


def test_tiny_tail_is_merged_into_the_previous_window():
    assert chunk_spans(105, 100, 20) == [(0, 105)]  # 5 new words < chunk_words // 10
    assert chunk_spans(110, 100, 20) == [(0, 100), (80, 110)]  # 10 new words: own window
    assert chunk_spans(30, 10, 0) == [(0, 10), (10, 20), (20, 30)]


def test_whitespace_is_normalised():
    assert chunk_text("a\n\n b\tc ", 100, 0)[0].text == "a b c"


def test_bad_chunking_arguments_are_refused():
    with pytest.raises(ValueError, match="chunk_overlap=10"):
        chunk_spans(5, 10, 10)


def test_page_of_and_indexed_text():
    assert [page_of(w, [0, 10, 25]) for w in (0, 9, 10, 30)] == [1, 1, 2, 3]
    assert indexed_text("T", "body", True) == "T\nbody"
    assert indexed_text("T", "body", False) == indexed_text("", "body", True) == "body"


def test_config_defaults_and_validation_name_the_value():
    cfg = RetrieverConfig()
    assert (cfg.kind, cfg.index_type, cfg.chunk_words, cfg.chunk_overlap) == ("dense", "Flat", 100, 20)
    with pytest.raises(ConfigError, match=r"retriever.kind='sparse'.*\['bm25', 'dense', 'hybrid'\]"):
        RetrieverConfig(kind="sparse")
    with pytest.raises(ConfigError, match=r"retriever.fusion='max'"):
        RetrieverConfig(fusion="max")
    with pytest.raises(ConfigError, match=r"chunk_overlap=100.*\[0, chunk_words=100\)"):
        RetrieverConfig(chunk_overlap=100)
    with pytest.raises(ConfigError, match="chunk_words=0"):
        RetrieverConfig(chunk_words=0)
    with pytest.raises(ConfigError, match="collection='../x'"):
        RetrieverConfig(collection="../x")
    with pytest.raises(ConfigError, match="without IDMap"):
        RetrieverConfig(index_type="IDMap,Flat")
    with pytest.raises(ConfigError, match="both 0"):
        RetrieverConfig(dense_weight=0, bm25_weight=0)


def test_registries_list_valid_names():
    from rearqa.retriever import retriever_class
    from rearqa.retriever.embedder import embedder_path

    with pytest.raises(ConfigError, match=r"unknown; valid retrievers are \['bm25', 'dense', 'hybrid'\]"):
        retriever_class("splade")
    with pytest.raises(ConfigError, match=r"not a registered embedder \(\['all-MiniLM-L6-v2'\]\)"):
        embedder_path("bert-huge")
