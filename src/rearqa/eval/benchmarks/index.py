"""Flat vs HNSW vs IVF-PQ on MiniLM vectors: build time, peak memory, queries/s and recall@10.

Two data sets, both 384-d, unit-norm and searched by inner product (= cosine):

* corpus     MiniLM embeddings of the bundled passages (about 10k), queried with NQ-dev questions
             embedded the same way;
* synthetic  N vectors drawn from a Gaussian mixture fitted to those corpus embeddings, queried
             with a separate draw from the same mixture. i.i.d. noise has no neighbourhoods, so an
             ANN index looks either perfect or hopeless on it; the mixture keeps the clusters and
             the spectrum of the real embeddings.

The mixture: PCA of the corpus embeddings, a full-covariance GMM (EM, scikit-learn) in the top
`gmm_pca_dim` principal directions, and independent Gaussians with the corpus's variances along
the other directions (shared by all components); samples are L2-normalised. How close it comes
is reported: mean cosine to the 1st and 10th nearest neighbour, corpus vs a corpus-sized sample.

Flat (exact search) runs first on each data set: its results are the ground truth of recall@10
and its batch-1 queries/s the baseline of the speed-up. HNSW (Malkov & Yashunin, 2016) is swept
over efSearch, IVF-PQ (Jegou et al., 2011) over nprobe.

    python -m rearqa.eval.benchmarks.index --n 1000000 --queries 1000 --threads 2 \\
        --out runs/bench/index.json
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import shlex
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from rearqa.files import atomic_write_text

PROG = "rearqa.eval.benchmarks.index"
MINILM_DIM = 384
DATASETS = ("corpus", "synthetic")
# "{nlist}" becomes nlist_for(n) on each data set. "np": no polysemous training, which serves
# only polysemous filtering (unused here) and would add about a minute to every IVF-PQ build.
INDEX_TYPES = ("Flat", "HNSW32", "IVF{nlist},PQ48np")
QUESTION_SET = "nq-dev"  # corpus queries come from a dev split, never from a test split
WARMUP_QUERIES = 64
TARGET_RECALL, TARGET_SPEEDUP = 0.95, 10.0  # the bar for HNSW at batch 1
SYNTHETIC_DESCRIPTION = "synthetic GMM fitted to MiniLM corpus embeddings"


@dataclass
class IndexBenchConfig:
    """What the index benchmark runs; filled from the command line."""

    n: int = 1_000_000  # synthetic base vectors
    queries: int = 1000  # query vectors per data set
    threads: int = 2  # OpenMP threads faiss builds and searches with
    out: Path = Path("runs/bench/index.json")  # JSON report; a markdown table is written beside it
    index_types: tuple[str, ...] = INDEX_TYPES  # faiss.index_factory specs; must include Flat
    ef_search: tuple[int, ...] = (16, 32, 64, 128, 256)  # HNSW efSearch values swept
    nprobe: tuple[int, ...] = (8, 16, 32, 64)  # IVF nprobe values swept
    ef_construction: int = 40  # HNSW efConstruction (faiss's default)
    datasets: tuple[str, ...] = DATASETS  # data sets run, in this order
    k: int = 10  # neighbours per query: recall@k
    gmm_components: int = 64  # mixture components
    gmm_pca_dim: int = 128  # principal directions given a full covariance per component
    gmm_max_iter: int = 100  # EM iterations at most
    max_train: int = 262_144  # base vectors sampled to train an index (IVF k-means, PQ codebooks)
    batch1_budget_s: float = 30.0  # batch-1 timing stops after this many seconds (Flat is slow)
    seed: int = 0  # seeds the mixture fit and every sample

    def __post_init__(self) -> None:
        for name in ("n", "queries", "threads", "ef_construction", "k", "gmm_components",
                     "gmm_pca_dim", "gmm_max_iter", "max_train"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: must be a positive integer")
        for name in ("ef_search", "nprobe"):
            values = getattr(self, name)
            if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                                 for v in values):
                raise ValueError(f"{name}={values!r}: give one or more positive integers")
        if "Flat" not in self.index_types:
            raise ValueError(f"index_types={list(self.index_types)}: add Flat, the exact search "
                             "that gives the ground truth and the speed-up baseline")
        if not self.datasets or set(self.datasets) - set(DATASETS):
            raise ValueError(f"datasets={list(self.datasets)}: choose from {list(DATASETS)}")
        if not self.batch1_budget_s > 0:
            raise ValueError(f"batch1_budget_s={self.batch1_budget_s!r}: must be > 0 seconds")


# ---------------------------------------------------------------------------- data sets

@dataclass
class CorpusEmbeddings:
    """MiniLM embeddings of the corpus passages and of questions to query them with."""

    passages: np.ndarray  # (n_passages, d) float32, unit norm
    questions: np.ndarray  # (n_questions, d) float32, unit norm
    source: str  # where the texts came from


@dataclass
class VectorSet:
    """One benchmark data set: base vectors to index and queries, (n, d) float32, unit norm."""

    name: str
    description: str
    base: np.ndarray
    queries: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def embed_cached(texts: Sequence[str], cache_dir: Path) -> np.ndarray:
    """MiniLM embeddings (len(texts), 384) float32, unit norm, cached as .npy by a text hash."""
    from rearqa import assets

    model_dir = assets.embedder_dir()
    model = f"{assets.EMBEDDER_PACKAGE}=={importlib.metadata.version(assets.EMBEDDER_PACKAGE)}"
    digest = hashlib.sha256("\x00".join([model, *texts]).encode()).hexdigest()
    path = cache_dir / f"minilm-{digest[:20]}.npy"
    if path.exists():
        return np.load(path, allow_pickle=False)
    from sentence_transformers import SentenceTransformer

    _log(f"embedding {len(texts)} texts with MiniLM (cached in {path})")
    embedder = SentenceTransformer(str(model_dir), device="cpu")
    vectors = embedder.encode(list(texts), batch_size=64, normalize_embeddings=True,
                           convert_to_numpy=True).astype(np.float32)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.npy")
    np.save(tmp, vectors, allow_pickle=False)
    os.replace(tmp, path)  # a killed run never leaves a truncated cache entry
    return vectors


def load_corpus_embeddings(n_questions: int, seed: int) -> CorpusEmbeddings:
    """The bundled corpus passages (`text` fields) and a seeded sample of NQ-dev questions."""
    from rearqa import assets
    from rearqa.data_prep import read_jsonl

    home = assets.ensure_prepared()
    passages = [r["text"] for r in read_jsonl(assets.corpus_file(home))]
    questions = [r["question"] for r in read_jsonl(assets.qa_file(QUESTION_SET, home))]
    if n_questions > len(questions):
        raise ValueError(f"--queries {n_questions}: {QUESTION_SET} has {len(questions)} questions")
    rng = np.random.default_rng([seed, 3])
    pick = np.sort(rng.choice(len(questions), n_questions, replace=False))
    return CorpusEmbeddings(embed_cached(passages, home / "cache"),
                            embed_cached([questions[i] for i in pick], home / "cache"),
                            f"{assets.corpus_file(home)}; queries: {QUESTION_SET} questions")


@dataclass
class SubspaceMixture:
    """Gaussian mixture in R^d: full covariances in the top-r PCA directions, a shared tail."""

    mean: np.ndarray  # (d,) corpus mean
    basis: np.ndarray  # (d, d) principal directions as columns, by decreasing variance
    tail_std: np.ndarray  # (d - r,) standard deviation along directions r..d-1
    weights: np.ndarray  # (K,) component weights
    means: np.ndarray  # (K, r) component means in PCA coordinates
    chol: np.ndarray  # (K, r, r) lower Cholesky factors of the component covariances

    def sample(self, n: int, rng: np.random.Generator, chunk: int = 32_768) -> np.ndarray:
        """(n, d) float32 samples, L2-normalised, components in random order."""
        (d,), r = self.mean.shape, self.means.shape[1]
        out = np.empty((n, d), np.float32)
        component = rng.choice(len(self.weights), size=n, p=self.weights)
        for start in range(0, n, chunk):
            comp = component[start:start + chunk]
            head = rng.standard_normal((len(comp), r))  # (m, r) whitened, coloured per component
            for k in np.unique(comp):
                rows = comp == k
                head[rows] = self.means[k] + head[rows] @ self.chol[k].T
            tail = rng.standard_normal((len(comp), d - r)) * self.tail_std  # (m, d - r)
            vectors = self.mean + head @ self.basis[:, :r].T + tail @ self.basis[:, r:].T
            out[start:start + len(comp)] = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        return out


def fit_mixture(x: np.ndarray, cfg: IndexBenchConfig) -> tuple[SubspaceMixture, dict[str, Any]]:
    """Fit the mixture to corpus embeddings x (n, d); returns it and its settings for the report."""
    from sklearn.mixture import GaussianMixture  # installed with sentence-transformers

    n, d = x.shape
    if cfg.gmm_pca_dim >= d:
        raise ValueError(f"gmm_pca_dim={cfg.gmm_pca_dim}: must be below the dimension {d}")
    if n < 10 * cfg.gmm_components:
        raise ValueError(f"{n} corpus vectors are too few for gmm_components="
                         f"{cfg.gmm_components}; use at most {n // 10}")
    start = time.perf_counter()
    mean = x.astype(np.float64).mean(0)
    centred = x - mean  # (n, d) float64
    variances, basis = np.linalg.eigh(centred.T @ centred / n)  # ascending
    variances, basis = np.clip(variances[::-1], 0.0, None), basis[:, ::-1]
    r, reg_covar = cfg.gmm_pca_dim, 1e-5
    gmm = GaussianMixture(cfg.gmm_components, covariance_type="full", reg_covar=reg_covar,
                          max_iter=cfg.gmm_max_iter, random_state=cfg.seed)
    gmm.fit(centred @ basis[:, :r])  # (n, r) PCA coordinates
    mixture = SubspaceMixture(mean, basis, np.sqrt(variances[r:]),
                              gmm.weights_ / gmm.weights_.sum(), gmm.means_,
                              np.linalg.cholesky(gmm.covariances_))
    info = {"model": "full-covariance GMM in the top PCA directions + independent Gaussian tail",
            "fitted_on": n, "components": cfg.gmm_components, "pca_dim": r,
            "variance_in_pca_dims": float(variances[:r].sum() / variances.sum()),
            "reg_covar": reg_covar, "max_iter": cfg.gmm_max_iter, "em_iterations": int(gmm.n_iter_),
            "converged": bool(gmm.converged_), "fit_s": time.perf_counter() - start,
            "seed": cfg.seed, "normalised": "L2, like MiniLM outputs"}
    return mixture, info


def neighbour_cosines(x: np.ndarray, k: int, probes: int, rng: np.random.Generator) -> dict:
    """Mean cosine to the 1st and k-th nearest other vector, over `probes` random vectors of x."""
    probe = x[rng.choice(len(x), min(probes, len(x)), replace=False)]
    sims, _ = faiss.knn(probe, x, k + 1, metric=faiss.METRIC_INNER_PRODUCT)  # column 0: itself
    return {"nn1": float(sims[:, 1].mean()), f"nn{k}": float(sims[:, k].mean())}


def synthetic_set(corpus: CorpusEmbeddings, cfg: IndexBenchConfig) -> VectorSet:
    mixture, info = fit_mixture(corpus.passages, cfg)
    start = time.perf_counter()
    base = mixture.sample(cfg.n, np.random.default_rng([cfg.seed, 1]))
    queries = mixture.sample(cfg.queries, np.random.default_rng([cfg.seed, 2]))  # not in base
    info["sample_s"] = time.perf_counter() - start
    _log(f"mixture fitted in {info['fit_s']:.0f} s ({info['em_iterations']} EM iterations); "
         f"{cfg.n:,} + {cfg.queries} vectors drawn in {info['sample_s']:.0f} s")
    info["sample_seeds"] = {"base": [cfg.seed, 1], "queries": [cfg.seed, 2]}
    like_corpus = mixture.sample(len(corpus.passages), np.random.default_rng([cfg.seed, 4]))
    rng = np.random.default_rng([cfg.seed, 6])
    info["fidelity"] = {"what": "mean cosine to nearest neighbours: corpus vs a corpus-sized draw",
                        "corpus": neighbour_cosines(corpus.passages, cfg.k, 1000, rng),
                        "synthetic": neighbour_cosines(like_corpus, cfg.k, 1000, rng)}
    return VectorSet("synthetic", SYNTHETIC_DESCRIPTION, base, queries, {"mixture": info})


def corpus_set(corpus: CorpusEmbeddings) -> VectorSet:
    return VectorSet("corpus", "MiniLM embeddings of the corpus passages, queried with questions",
                     corpus.passages, corpus.questions, {"source": corpus.source})


# ---------------------------------------------------------------------------- measurement

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
        _log(f"[{data.name}] building {spec} on {len(data.base):,} vectors")
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
            _log(markdown_table(rows[-1:], cfg.k, header=False))
        del index
    return rows


# ---------------------------------------------------------------------------- report

def markdown_table(rows: Sequence[dict[str, Any]], k: int, header: bool = True) -> str:
    columns = (("dataset", "dataset", "{}"), ("index", "index", "{}"), ("setting", "setting", "{}"),
               ("build s", "build_s", "{:.1f}"), ("peak MB", "peak_mb", "{:,.0f}"),
               ("index MB", "index_mb", "{:,.1f}"), ("QPS@1", "qps_batch1", "{:,.0f}"),
               ("timed@1", "timed_batch1", "{}"), ("QPS@64", "qps_batch64", "{:,.0f}"),
               (f"recall@{k}", f"recall@{k}", "{:.3f}"), ("x Flat@1", "speedup_batch1", "{:.1f}x"))
    lines = [f"| {' | '.join(fmt.format(row[key]) for _, key, fmt in columns)} |" for row in rows]
    if header:
        lines[:0] = [f"| {' | '.join(name for name, _, _ in columns)} |",
                     f"|{'|'.join('---' for _ in columns)}|"]
    return "\n".join(lines)


def verdict(rows: Sequence[dict[str, Any]], dataset: str, n: int, k: int) -> str:
    """Which HNSW setting, if any, reaches recall@k >= 0.95 at >= 10x Flat's batch-1 queries/s."""
    key, rows = f"recall@{k}", [r for r in rows if r["dataset"] == dataset]
    head = (f"{dataset} ({n:,} vectors), target recall@{k} >= {TARGET_RECALL} at >= "
            f"{TARGET_SPEEDUP:g}x Flat's QPS@1")
    meets = [r for r in rows if r[key] >= TARGET_RECALL and r["speedup_batch1"] >= TARGET_SPEEDUP]
    hnsw = [r for r in rows if r["family"] == "HNSW"]
    if not hnsw:
        return f"{head}: no HNSW index was run."

    def name(r: dict[str, Any]) -> str:
        return f"{r['index']} {r['setting']} (recall {r[key]:.3f}, {r['speedup_batch1']:.1f}x)"

    hnsw_meets = [r for r in meets if r["family"] == "HNSW"]
    if hnsw_meets:
        return f"{head}: MET by {name(max(hnsw_meets, key=lambda r: r['speedup_batch1']))}."
    accurate = [r for r in hnsw if r[key] >= TARGET_RECALL]
    why = (f"the fastest HNSW setting with enough recall is "
           f"{name(max(accurate, key=lambda r: r['speedup_batch1']))}" if accurate
           else f"the best HNSW recall is {name(max(hnsw, key=lambda r: r[key]))}")
    others = ", ".join(name(r) for r in meets) or "none"
    return f"{head}: NOT MET; {why}. Settings that meet it: {others}."


def machine_info(threads: int) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
            "memory_gb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
            "load_average_at_start": os.getloadavg(), "threads": threads,
            "faiss": faiss.__version__, "faiss_build": faiss.get_compile_options(),
            "numpy": np.__version__, "python": platform.python_version(),
            "platform": platform.platform()}


def write_report(report: dict[str, Any], out: Path, k: int) -> None:
    """JSON with every row and per-query recall; a markdown table beside it (same name, .md)."""
    m, lines = report["machine"], []
    for name, s in report["datasets"].items():
        lines.append(f"- {name}: {s['description']}; {s['n_base']:,} base vectors, "
                     f"{s['n_queries']} queries.")
        if "mixture" in s:
            mix, fid = s["mixture"], s["mixture"]["fidelity"]
            lines.append(f"  Mixture: {mix['components']} components, full covariance in the top "
                         f"{mix['pca_dim']} PCA directions, seed {mix['seed']}. Nearest-neighbour "
                         f"cosine 1st/{k}th: corpus {fid['corpus']['nn1']:.2f}/"
                         f"{fid['corpus'][f'nn{k}']:.2f}, synthetic {fid['synthetic']['nn1']:.2f}/"
                         f"{fid['synthetic'][f'nn{k}']:.2f}.")
    md = "\n".join([
        f"{m['cpu']}, {m['threads']} threads, faiss {m['faiss']}. recall@{k} against Flat; "
        "QPS@1 timed over timed@1 single queries; peak MB = RSS growth while building.",
        *lines, "", markdown_table(report["rows"], k), "",
        *(f"- {line}" for line in report["verdict"].values()),
        *(f"- WARNING: {w}" for w in [report.get("warning")] if w),
        "", f"Command: `{report['command']}`", ""])
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(report, indent=1) + "\n")
    atomic_write_text(out.with_suffix(".md"), md)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    d = IndexBenchConfig()
    p = argparse.ArgumentParser(prog=f"python -m {PROG}",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=d.n, help="synthetic base vectors")
    p.add_argument("--queries", type=int, default=d.queries, help="queries per data set")
    p.add_argument("--threads", type=int, default=d.threads, help="faiss OpenMP threads")
    p.add_argument("--out", type=Path, default=d.out, help="JSON report (.md table beside it)")
    p.add_argument("--index-types", nargs="+", default=list(d.index_types),
                   help='faiss.index_factory specs, Flat included; "{nlist}" is set per data set')
    p.add_argument("--ef-search", nargs="+", type=int, default=list(d.ef_search))
    p.add_argument("--nprobe", nargs="+", type=int, default=list(d.nprobe))
    p.add_argument("--ef-construction", type=int, default=d.ef_construction)
    only = p.add_mutually_exclusive_group()
    only.add_argument("--corpus-only", action="store_true", help="skip the synthetic set")
    only.add_argument("--synthetic-only", action="store_true", help="skip the real corpus set")
    p.add_argument("--k", type=int, default=d.k, help="neighbours per query (recall@k)")
    p.add_argument("--gmm-components", type=int, default=d.gmm_components)
    p.add_argument("--gmm-pca-dim", type=int, default=d.gmm_pca_dim)
    p.add_argument("--gmm-max-iter", type=int, default=d.gmm_max_iter)
    p.add_argument("--max-train", type=int, default=d.max_train,
                   help="vectors sampled to train IVF/PQ indexes")
    p.add_argument("--batch1-budget-s", type=float, default=d.batch1_budget_s,
                   help="stop timing batch-1 queries after this long")
    p.add_argument("--seed", type=int, default=d.seed)
    return p


def main(argv: Sequence[str] | None = None,
         corpus: CorpusEmbeddings | None = None) -> dict[str, Any]:
    """Run the benchmark and write its report; `corpus` stands in for the MiniLM embeddings."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = vars(build_parser().parse_args(argv))
    only_corpus, only_synthetic = args.pop("corpus_only"), args.pop("synthetic_only")
    cfg = IndexBenchConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in args.items()},
                           datasets=("corpus",) if only_corpus
                           else ("synthetic",) if only_synthetic else DATASETS)
    faiss.omp_set_num_threads(cfg.threads)
    report: dict[str, Any] = {
        "benchmark": "index", "command": shlex.join(["python", "-m", PROG, *argv]),
        "config": {**asdict(cfg), "out": str(cfg.out)},
        "machine": machine_info(cfg.threads), "datasets": {}, "rows": [], "verdict": {},
        "targets": {"recall": TARGET_RECALL, "speedup_batch1": TARGET_SPEEDUP}}
    load = report["machine"]["load_average_at_start"][0]
    if load > os.cpu_count() - cfg.threads + 1.0:  # a whole busy core stalls OpenMP threads
        report["warning"] = (f"load average {load:.1f} on {os.cpu_count()} CPUs at start: other "
                             "processes compete for the cores, so the timings are unreliable")
        _log("WARNING: " + report["warning"])
    check_index_types(cfg.index_types, MINILM_DIM if corpus is None else corpus.passages.shape[1])
    if corpus is None:
        corpus = load_corpus_embeddings(cfg.queries, cfg.seed)
    for name in cfg.datasets:
        _log(f"preparing the {name} set")
        data = corpus_set(corpus) if name == "corpus" else synthetic_set(corpus, cfg)
        report["datasets"][name] = {"description": data.description, "n_base": len(data.base),
                                    "n_queries": len(data.queries), "dim": data.base.shape[1],
                                    **data.info}
        report["rows"] += bench_set(data, cfg)
        report["verdict"][name] = verdict(report["rows"], name, len(data.base), cfg.k)
        del data
    report["machine"]["load_average_at_end"] = os.getloadavg()
    write_report(report, cfg.out, cfg.k)
    print(markdown_table(report["rows"], cfg.k))
    print("\n".join([*report["verdict"].values(), *filter(None, [report.get("warning")])]))
    print(f"wrote {cfg.out} and {cfg.out.with_suffix('.md')}")
    return report


if __name__ == "__main__":
    main()
