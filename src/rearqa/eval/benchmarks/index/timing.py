"""Building and timing faiss indexes: peak memory of a build, queries/s at batch 1 and 64, and
recall@k against Flat, swept over each index family's search parameter.
"""
from __future__ import annotations

import ctypes
import gc
import math
import threading
import time
from collections.abc import Sequence
from typing import Any

import faiss
import numpy as np

from rearqa.eval.benchmarks.index.config import WARMUP_QUERIES, IndexBenchConfig, progress
from rearqa.eval.benchmarks.index.report import markdown_table
from rearqa.eval.benchmarks.index.vectors import VectorSet


def _proc_status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {key}: peak memory is measured on Linux only")


def _release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc's malloc_trim), so memory that an earlier index
    left in the allocator is not reused unseen and the next build's growth under-counted."""
    gc.collect()
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)


class PeakRSS:
    """Peak growth of this process's resident memory, in MB, over a `with` block.

    getrusage's maxrss never goes down, so it cannot isolate one build. The kernel's high-water
    mark (VmHWM) is reset through /proc/self/clear_refs where that is allowed (exact); elsewhere
    RSS is sampled every 2 ms in a thread. `method` says which one was used.
    """

    def __enter__(self) -> PeakRSS:
        _release_freed_memory()
        self.start, self.mb, self._sampler = _proc_status_mb("VmRSS"), 0.0, None
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.method = "VmHWM reset through /proc/self/clear_refs"
        except OSError:
            self.method, self._peak = "VmRSS sampled every 2 ms", self.start
            self._stop = threading.Event()
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self._peak = max(self._peak, _proc_status_mb("VmRSS"))

    def __exit__(self, *exc: object) -> None:
        if self._sampler is None:
            peak = _proc_status_mb("VmHWM")
        else:
            self._stop.set()
            self._sampler.join()
            peak = max(self._peak, _proc_status_mb("VmRSS"))
        self.mb = peak - self.start


# Index families by the faiss class that does the search, with the parameter swept for each.
SEARCH_KNOBS = {faiss.IndexHNSW: ("HNSW", "efSearch"), faiss.IndexIVF: ("IVF", "nprobe"),
                faiss.IndexFlatCodes: ("exhaustive", None)}


def _searching_index(index: faiss.Index) -> faiss.Index:
    """The index that does the search, inside any PreTransform / Refine wrappers."""
    inner = faiss.downcast_index(index)
    while isinstance(inner, (faiss.IndexPreTransform, faiss.IndexRefine)):
        inner = faiss.downcast_index(inner.index if isinstance(inner, faiss.IndexPreTransform)
                                     else inner.base_index)
    return inner


def index_family(index: faiss.Index) -> tuple[str, str | None]:
    """(family, swept search parameter) of an index; an index of no known family is an error."""
    inner = _searching_index(index)
    for cls, family in SEARCH_KNOBS.items():
        if isinstance(inner, cls):
            return family
    raise ValueError(f"no sweep is defined for {type(inner).__name__}; supported families: "
                     + ", ".join(f"{c.__name__} ({f})" for c, (f, _) in SEARCH_KNOBS.items()))


def nlist_for(n: int, n_train: int | None = None) -> int:
    """IVF lists for n vectors: the power of two nearest 4*sqrt(n), at most n_train/39 (faiss's
    k-means wants 39 training points per centroid or more)."""
    nlist, n_train = 2 ** round(math.log2(4 * math.sqrt(n))), n if n_train is None else n_train
    while nlist > 1 and 39 * nlist > n_train:
        nlist //= 2
    return nlist


def serialized_mb(index: faiss.Index) -> float:
    """Size of the index as faiss writes it, counted without holding a copy in memory."""
    total = 0

    def count(chunk: bytes) -> int:
        nonlocal total
        total += len(chunk)
        return len(chunk)

    faiss.write_index(index, faiss.PyCallbackIOWriter(count))
    return total / 2**20


def check_index_types(specs: Sequence[str], dim: int) -> None:
    """Fail before any work on a spec faiss cannot parse or whose family has no sweep."""
    for spec in specs:
        index_family(faiss.index_factory(dim, spec.replace("{nlist}", "1"),
                                         faiss.METRIC_INNER_PRODUCT))


def build_index(spec: str, base: np.ndarray, cfg: IndexBenchConfig,
                rng: np.random.Generator) -> tuple[faiss.Index, dict[str, Any]]:
    """Train (on at most max_train sampled vectors) and add `base`; returns the index and costs."""
    index = faiss.index_factory(base.shape[1], spec, faiss.METRIC_INNER_PRODUCT)
    inner = _searching_index(index)
    if isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efConstruction = cfg.ef_construction
    n_train = 0 if index.is_trained else min(len(base), cfg.max_train)
    with PeakRSS() as memory:
        start, cpu_start = time.perf_counter(), time.process_time()
        if n_train:
            index.train(base if n_train == len(base)
                        else base[np.sort(rng.choice(len(base), n_train, replace=False))])
        index.add(base)
        build_s, build_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    return index, {"build_s": build_s, "build_cpu_s": build_cpu_s, "peak_mb": memory.mb,
                   "memory_method": memory.method, "index_mb": serialized_mb(index),
                   "trained_on": n_train}


def timed_search(index: faiss.Index, queries: np.ndarray, k: int, batch: int,
                 budget_s: float | None = None) -> tuple[np.ndarray, float, int]:
    """Search in batches of `batch`; returns (ids (done, k), queries/s, done). With a budget it
    stops after the batch that crosses it."""
    found, done = [], 0
    start = time.perf_counter()
    while done < len(queries):
        _, ids = index.search(queries[done:done + batch], k)
        found.append(ids)
        done += len(ids)
        if budget_s is not None and time.perf_counter() - start > budget_s:
            break
    return np.concatenate(found), done / (time.perf_counter() - start), done


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per query: the share of the true k nearest neighbours among the k found."""
    return np.array([len(np.intersect1d(f, t)) / truth.shape[1] for f, t in zip(found, truth)])


def bench_set(data: VectorSet, cfg: IndexBenchConfig) -> list[dict[str, Any]]:
    """Every index type and search setting on one data set, Flat first; one row per setting."""
    rows, truth, flat_qps1 = [], None, 0.0
    nlist = nlist_for(len(data.base), min(len(data.base), cfg.max_train))
    rng = np.random.default_rng([cfg.seed, 5])
    sweeps = {"efSearch": cfg.ef_search, "nprobe": cfg.nprobe, None: (None,)}
    for template in ["Flat", *(s for s in cfg.index_types if s != "Flat")]:
        spec = template.replace("{nlist}", str(nlist))
        progress(f"[{data.name}] building {spec} on {len(data.base):,} vectors")
        index, cost = build_index(spec, data.base, cfg, rng)
        family, knob = index_family(index)
        for value in sweeps[knob]:
            if knob is not None:
                faiss.ParameterSpace().set_index_parameter(index, knob, value)
            index.search(data.queries[:WARMUP_QUERIES], cfg.k)  # warm caches and thread pool
            found, qps64, n64 = timed_search(index, data.queries, cfg.k, 64)
            _, qps1, n1 = timed_search(index, data.queries, cfg.k, 1, cfg.batch1_budget_s)
            if truth is None:  # Flat: exact results and the speed baseline
                truth, flat_qps1 = found, qps1
            recall = recall_at_k(found, truth)
            rows.append({"dataset": data.name, "index": spec, "family": family,
                         "setting": "-" if knob is None else f"{knob}={value}", **cost,
                         "ef_construction": cfg.ef_construction if family == "HNSW" else None,
                         "qps_batch1": qps1, "timed_batch1": n1, "qps_batch64": qps64,
                         "timed_batch64": n64, f"recall@{cfg.k}": float(recall.mean()),
                         "speedup_batch1": qps1 / flat_qps1,
                         f"recall@{cfg.k}_per_query": [round(float(v), 4) for v in recall]})
            progress(markdown_table(rows[-1:], cfg.k, header=False))
        del index
    return rows

