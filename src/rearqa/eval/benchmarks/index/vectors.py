"""The benchmark's vector sets: MiniLM embeddings of the bundled corpus (cached), and a synthetic
set drawn from a Gaussian mixture fitted to them (see the package docstring for why a mixture).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from rearqa.eval.benchmarks.index.config import (
    QUESTION_SET,
    SYNTHETIC_DESCRIPTION,
    IndexBenchConfig,
    progress,
)
from rearqa.files import atomic_write


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

    progress(f"embedding {len(texts)} texts with MiniLM (cached in {path})")
    embedder = SentenceTransformer(str(model_dir), device="cpu")
    vectors = embedder.encode(list(texts), batch_size=64, normalize_embeddings=True,
                           convert_to_numpy=True).astype(np.float32)
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to a path
            np.save(f, vectors, allow_pickle=False)

    atomic_write(path, write)  # a killed run never leaves a truncated cache entry
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
    """cfg.n base vectors and cfg.queries queries drawn from a mixture fitted to the corpus."""
    mixture, info = fit_mixture(corpus.passages, cfg)
    start = time.perf_counter()
    base = mixture.sample(cfg.n, np.random.default_rng([cfg.seed, 1]))
    queries = mixture.sample(cfg.queries, np.random.default_rng([cfg.seed, 2]))  # not in base
    info["sample_s"] = time.perf_counter() - start
    progress(f"mixture fitted in {info['fit_s']:.0f} s ({info['em_iterations']} EM iterations); "
             f"{cfg.n:,} + {cfg.queries} vectors drawn in {info['sample_s']:.0f} s")
    info["sample_seeds"] = {"base": [cfg.seed, 1], "queries": [cfg.seed, 2]}
    like_corpus = mixture.sample(len(corpus.passages), np.random.default_rng([cfg.seed, 4]))
    rng = np.random.default_rng([cfg.seed, 6])
    info["fidelity"] = {"what": "mean cosine to nearest neighbours: corpus vs a corpus-sized draw",
                        "corpus": neighbour_cosines(corpus.passages, cfg.k, 1000, rng),
                        "synthetic": neighbour_cosines(like_corpus, cfg.k, 1000, rng)}
    return VectorSet("synthetic", SYNTHETIC_DESCRIPTION, base, queries, {"mixture": info})


def corpus_set(corpus: CorpusEmbeddings, cfg: IndexBenchConfig) -> VectorSet:
    """The corpus embeddings as they are (`cfg` unused: every vector set takes it, VECTOR_SETS)."""
    return VectorSet("corpus", "MiniLM embeddings of the corpus passages, queried with questions",
                     corpus.passages, corpus.questions, {"source": corpus.source})

