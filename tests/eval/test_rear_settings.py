"""rear_eval's typed settings: the command line fills them, bad values are refused with the fix,
and every reader method has a builder."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from rearqa.config_errors import ConfigError
from rearqa.eval.rear_eval import parse_settings
from rearqa.eval.rear_settings import READER_BUILDERS, RearEvalSettings
from rearqa.reader.config import READER_METHODS
from rearqa.registry import load


def test_every_reader_method_has_a_builder():
    assert set(READER_BUILDERS) == set(READER_METHODS)
    for target in READER_BUILDERS.values():
        assert callable(load(target))


def test_command_line_fills_the_settings():
    settings = parse_settings(["--snapshot", "snap", "--split", "nq-test", "--out", "o",
                               "--methods", "rear", "rag-ft", "--adapter-rag-ft", "A", "--k", "5"])
    assert settings.snapshot == Path("snap") and settings.out == Path("o")
    assert settings.methods == ("rear", "rag-ft") and settings.k == 5
    assert settings.adapters == {"rag-ft": Path("A")}
    assert settings.adapter("rag-ft") == "A" and settings.adapter("closed-book-ft") == ""
    assert settings.checkpoint is None and settings.limit is None and not settings.choose_threshold


@pytest.mark.parametrize("change, message", [
    ({"methods": ("rear", "bert")}, "methods=.*choose one or more of"),
    ({"k": 0}, "k=0: must be a positive integer"),
    ({"limit": 0}, "limit=0"),
    ({"retriever": "hybrid"}, "retriever='hybrid': choose one of \\['dense', 'bm25'\\]"),
    ({"fallback": "best_passage"}, "fallback='best_passage'"),
    ({"adapters": {"rag": "A"}}, "only \\['rag-ft', 'closed-book-ft'\\] read an adapter"),
    ({"dtype": "float16"}, "dtype='float16'"),
    ({"engine": "sglang"}, "engine='sglang': choose one of"),
])
def test_bad_settings_are_refused_with_the_fix(change, message):
    with pytest.raises(ConfigError, match=message):
        RearEvalSettings(**{"snapshot": "s", "split": "nq-test", "out": "o", **change})


def test_the_backbone_reaches_the_readers_config():
    """`--backbone spatten:...` on the snapshot runner (the GPU units' eval): the reader's config
    carries it, so its engine runs SpAtten; a bad budget is refused where the config is built."""
    from rearqa.eval.rear_runs import reader_config

    settings = parse_settings(["--snapshot", "snap", "--split", "nq-dev-select", "--out", "o",
                               "--methods", "rag-ft", "--backbone", "spatten:tokens=0.6"])
    assert reader_config(settings, "rag-ft").backbone == "spatten:tokens=0.6"
    assert reader_config(parse_settings(["--snapshot", "s", "--split", "nq-test", "--out", "o"]),
                         "rag-ft").backbone == ""
    with pytest.raises(ConfigError, match="spatten"):
        reader_config(parse_settings(["--snapshot", "s", "--split", "nq-test", "--out", "o",
                                      "--backbone", "spatten:tokens=2"]), "rag-ft")


def test_the_rag_builder_runs_the_backbone_it_is_given(tmp_path):
    """The rag reader of the snapshot runner builds its own engine: it must install it too."""
    from rearqa.eval.rear_runs import build_baseline_reader
    from rearqa.reader.config import ReaderConfig
    from rearqa.testing import tiny_llama, tiny_tokenizer

    tok = tiny_tokenizer()
    tiny_llama(len(tok)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    config = ReaderConfig(method="rag", backbone="spatten:tokens=0.5,start_layer=1")
    reader, _ = build_baseline_reader(config, str(tmp_path), "cpu")
    assert reader.engine.backbone.startswith("spatten:tokens=0.5")


def test_the_engine_reaches_the_readers_config():
    """`--engine vllm` runs the snapshot runner's readers on vLLM (the CPU build here); an
    inference-time backbone stays refused there, where the reader's config is built."""
    from rearqa.eval.rear_runs import reader_config

    base = ["--snapshot", "s", "--split", "nq-test", "--out", "o", "--methods", "rag-ft"]
    assert reader_config(parse_settings(base), "rag-ft").engine == "hf"
    assert reader_config(parse_settings([*base, "--engine", "vllm"]), "rag-ft").engine == "vllm"
    with pytest.raises(ConfigError, match="engine 'hf' only"):
        reader_config(parse_settings([*base, "--engine", "vllm", "--backbone", "spatten:tokens=0.6"]),
                      "rag-ft")


def test_rear_on_vllm_is_built_by_the_engine_registry(monkeypatch):
    """REAR's builder hands engine vllm to RearReader.from_config (REAR_ENGINES' VllmRearReader):
    constructing RearReader itself would load transformers whatever the settings said."""
    from rearqa.eval.rear_runs import build_rear_reader
    from rearqa.reader.config import ReaderConfig
    from rearqa.reader.rear.reader import RearReader

    built = SimpleNamespace(routing=SimpleNamespace(method="path_reliability"))
    calls = []
    monkeypatch.setattr(RearReader, "from_config",
                        classmethod(lambda cls, config, base: calls.append((config.engine, base)) or built))
    reader, weights = build_rear_reader(ReaderConfig(method="rear", engine="vllm"), "BASE", "cpu")
    assert reader is built and calls == [("vllm", "BASE")]
    assert weights["base_model"] == "BASE" and weights["routing"] == {"method": "path_reliability"}
