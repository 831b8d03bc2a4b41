"""Head composition: which attention heads read what earlier heads write, from the weights alone.

After Merullo, Eickhoff and Pavlick, "Talking Heads: Understanding Inter-layer Communication in
Transformer Language Models" (arXiv 2406.09519), which builds on the composition scores of Elhage
et al., "A Mathematical Framework for Transformer Circuits" (2021). A head a in layer i writes
into the residual stream through its output-value circuit W_OV^a = W_O^a W_V^a (hidden x hidden,
rank <= head_dim); a head b in a later layer j reads the stream through three maps, its query,
key and value projections. b composes with a where what b reads overlaps what a writes:
Q-composition (b's queries read a's output), K-composition (b's keys do), V-composition (b's
values do: a virtual head a -> b).

Two scores per (a, b, kind), both in [0, 1]:
- `subspace` (the Talking Heads view: a low-rank channel between heads, found from singular
  vectors): U_a = the top-r left singular vectors of W_OV^a (the directions a writes most),
  V_b = the top-r right singular vectors of b's read matrix R_b (the directions b reads most),
  score = ||U_a^T V_b||_F / sqrt(r), the root mean square cosine of the principal angles between
  the two r-dimensional subspaces. 1: the same subspace; 0: orthogonal. Two random subspaces
  score about sqrt(r / hidden). The paper scores the overlap of singular vectors component by
  component; this is the same overlap summed over the top r, so each pair gets one number.
- `frobenius` (Elhage's composition score with b's read matrix in place of its QK circuit):
  ||R_b W_OV^a||_F / (||R_b||_F ||W_OV^a||_F); random matrices score about 1 / sqrt(hidden).

The read matrices, and how RoPE and the norms are treated:
- GQA: query head h uses KV head h // (heads / kv_heads). Q-composition reads W_Q^h; K- and
  V-composition read W_K and W_V of the KV head, so the query heads of one group share their K
  and V scores (kept once per KV head in the result). W_OV^a uses a's own o_proj columns and its
  KV head's W_V.
- RoPE: Elhage's Q/K scores use W_QK = W_Q^T W_K, which under RoPE becomes W_Q^T R(m - n) W_K,
  a different matrix at every relative position. RoPE rotates q and k *after* the projection, so
  the subspace of the residual stream a query reads (the row space of W_Q) and its singular
  values do not change with position: ||R W_Q x|| = ||W_Q x|| for the orthogonal R. Scoring
  against the query side and the key side separately is therefore exact at every position; what
  is left out is which query direction pairs with which key direction (the QK circuit itself).
- Norms: layer j's input RMSNorm gain gamma_j sits between the stream and b's projections, so
  it is folded into the read matrices' columns (R_b = W diag(gamma_j)); a's W_V gets its own
  layer's gain. The norm's per-token scale 1 / rms(x) is a scalar per token: it changes no
  subspace and is left out. Nothing passes through the MLPs here (paths a -> MLP -> b are not
  composition in this sense), and the biases (none in Llama) would not change a subspace.

Cost: every factor is hidden x head_dim, so W_OV is never formed: with C = W_V diag(gamma) and
F F^T = C C^T (F is head_dim square), W_OV = W_O C and W_O F share W_OV W_OV^T, so the left
singular vectors and the norms of W_OV are those of W_O F. Singular vectors come from head_dim
square Gram matrices; one product gives all subspace overlaps and one chunked product the
Frobenius norms: under a minute for SmolLM2 on a shared 2-core CPU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rearqa.config_errors import ConfigError

KINDS = ("q", "k", "v")  # Q-, K- and V-composition
MEASURES = ("subspace", "frobenius")
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass
class HeadCircuits:
    """Each head's write and read matrices, norm gains folded in (float64)."""

    write: torch.Tensor  # (L, H, D, d): a factor of W_OV^h with write write^T = W_OV W_OV^T
    read: dict[str, torch.Tensor]  # "q": (L, H, d, D), "k" and "v": (L, KV, d, D), gamma folded

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """(layers, heads, kv_heads, head_dim, hidden)."""
        layers, heads, hidden, head_dim = self.write.shape
        return layers, heads, self.read["k"].shape[1], head_dim, hidden


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The decoder layers of a Llama-style causal LM (q/k/v/o projections, an RMSNorm before
    attention); anything else is refused, naming what is missing."""
    body = getattr(model, "model", None)
    layers = getattr(body, "layers", None)
    if layers is None:
        raise ConfigError(f"{type(model).__name__} is not a Llama-style causal LM (no model.layers); "
                          "inspect heads reads q/k/v/o_proj attention layers")
    for name, layer in enumerate(layers):
        attn = getattr(layer, "self_attn", None)
        missing = [p for p in PROJECTIONS if not isinstance(getattr(attn, p, None), torch.nn.Linear)]
        if missing:
            raise ConfigError(f"layers.{name}.self_attn has no {', '.join(missing)}: not a Llama-style "
                              "attention (a converted MLA reader?); inspect heads reads GQA/MHA readers")
        norm = getattr(layer, "input_layernorm", None)
        if getattr(norm, "bias", None) is not None or getattr(norm, "weight", None) is None:
            raise ConfigError(f"layers.{name}.input_layernorm is not an RMSNorm with a gain (a "
                              "LayerNorm's centring is not folded); inspect heads reads Llama-style readers")
    return list(layers)


@torch.no_grad()
def head_circuits(model: torch.nn.Module) -> HeadCircuits:
    """The write factor and the read matrices of every head of `model`."""
    layers = decoder_layers(model)
    config = model.config
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    hidden = config.hidden_size
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    group = heads // kv_heads
    writes, reads = [], {kind: [] for kind in KINDS}
    for layer in layers:
        attn = layer.self_attn
        gamma = layer.input_layernorm.weight.double()  # (D,)
        q = attn.q_proj.weight.double().view(heads, head_dim, hidden) * gamma  # (H, d, D)
        k = attn.k_proj.weight.double().view(kv_heads, head_dim, hidden) * gamma  # (KV, d, D)
        v = attn.v_proj.weight.double().view(kv_heads, head_dim, hidden) * gamma  # (KV, d, D)
        o = attn.o_proj.weight.double().view(hidden, heads, head_dim).transpose(0, 1)  # (H, D, d)
        writes.append(o @ value_root(v).repeat_interleave(group, dim=0))  # (H, D, d)
        for kind, matrix in zip(KINDS, (q, k, v)):
            reads[kind].append(matrix)
    return HeadCircuits(torch.stack(writes), {kind: torch.stack(m) for kind, m in reads.items()})


def value_root(value: torch.Tensor) -> torch.Tensor:
    """F with F F^T = C C^T for each value matrix C (..., d, D): then W_OV = W_O C and its factor
    W_O F have the same W_OV W_OV^T, hence the same left singular vectors, singular values and
    norms, and the hidden x hidden W_OV is never formed."""
    values, vectors = torch.linalg.eigh(value @ value.transpose(-1, -2))  # C C^T = E diag E^T
    return vectors * values.clamp(min=0).sqrt()[..., None, :]  # E diag^(1/2): (..., d, d)


def top_directions(tall: torch.Tensor, rank: int) -> torch.Tensor:
    """The top-`rank` left singular vectors of each tall matrix A in the batch, (..., D, d) ->
    (..., D, rank), through the d x d Gram matrix: A^T A = W S^2 W^T, so A W / S are A's left
    singular vectors (quicker than an SVD of the tall matrix; the top ones are what is kept). A
    direction with no singular value (A of rank < `rank`) comes out as zero: it reads or writes
    nothing, and adds nothing to an overlap."""
    values, vectors = torch.linalg.eigh(tall.transpose(-1, -2) @ tall)  # ascending
    top = tall @ vectors.flip(-1)[..., :rank]  # (..., D, rank): columns A w_i, of norm s_i
    scale = values.flip(-1)[..., :rank].clamp(min=0).sqrt()
    keep = scale > scale[..., :1] * 1e-6  # singular values at fp noise are no direction
    return torch.where(keep[..., None, :], top / scale.clamp(min=1e-300)[..., None, :], 0.0)


def subspace_scores(circuits: HeadCircuits, rank: int) -> dict[str, torch.Tensor]:
    """||U_a^T V_b||_F / sqrt(rank) for every (writer a, reader b): per kind (L, H, L, N), N the
    reading heads (query heads for q, KV heads for k and v)."""
    layers, heads, _, _, hidden = circuits.shape
    writes = top_directions(circuits.write.flatten(0, 1), rank)  # (L*H, D, r)
    writes = writes.transpose(1, 2).reshape(-1, hidden)  # (L*H*r, D)
    scores = {}
    for kind, read in circuits.read.items():
        readers = read.shape[1]
        reads = top_directions(read.flatten(0, 1).transpose(1, 2), rank)  # (L*N, D, r): rows read
        overlap = writes @ reads.transpose(0, 1).reshape(hidden, -1)  # (L*H*r, L*N*r)
        overlap = overlap.view(layers * heads, rank, layers * readers, rank)
        score = overlap.square().sum(dim=(1, 3)).div(rank).sqrt()  # (L*H, L*N)
        scores[kind] = score.view(layers, heads, layers, readers)
    return scores


def frobenius_scores(circuits: HeadCircuits) -> dict[str, torch.Tensor]:
    """||R_b W_OV^a||_F / (||R_b||_F ||W_OV^a||_F) for every (writer a, reader b), shaped as in
    `subspace_scores`. ||R W_OV||_F^2 = tr(R W_OV W_OV^T R^T) = ||R write||_F^2: write stands in
    for W_OV in both norms."""
    layers, heads, _, head_dim, hidden = circuits.shape
    write = circuits.write.float()  # float32: the one large product; 1e-7 from float64 here
    write_norm = write.flatten(2).norm(dim=-1)  # (L, H)
    scores = {}
    for kind, read in circuits.read.items():
        read = read.float()
        readers = read.shape[1]
        read_norm = read.flatten(2).norm(dim=-1)  # (L, N)
        score = torch.zeros(layers, heads, layers, readers, dtype=read.dtype)
        for i in range(layers - 1):  # one writing layer at a time, read by the layers after it
            later = read[i + 1:].reshape(-1, hidden)  # (l*N*d, D)
            block = later @ write[i].transpose(0, 1).reshape(hidden, -1)  # (l*N*d, H*d)
            block = block.view(-1, readers, head_dim, heads, head_dim).square().sum(dim=(2, 4))
            score[i, :, i + 1:] = block.sqrt().permute(2, 0, 1)  # (H, l, N)
        norms = write_norm[:, :, None, None] * read_norm[None, None]
        scores[kind] = score / norms.clamp(min=torch.finfo(norms.dtype).tiny)  # reads nothing: 0
    return scores


@dataclass
class Composition:
    """Composition scores of every earlier head into every later one."""

    rank: int  # singular vectors per side in the subspace score
    scores: dict[str, dict[str, torch.Tensor]]  # measure -> kind -> (L, H, L, N); NaN where j <= i
    group: int  # query heads per KV head

    @property
    def layers(self) -> int:
        return self.scores["subspace"]["q"].shape[0]

    def per_query_head(self, measure: str, kind: str) -> torch.Tensor:
        """(L, H, L, H): a KV head's score repeated over its query heads (for k and v)."""
        score = self.scores[measure][kind]
        return score if kind == "q" else score.repeat_interleave(self.group, dim=3)


def later_only(score: torch.Tensor) -> torch.Tensor:
    """`score` (L, H, L, N) with NaN where the reader's layer is not after the writer's."""
    layers = score.shape[0]
    later = torch.ones(layers, layers, dtype=torch.bool).triu(diagonal=1)  # [i, j]: j > i
    return score.masked_fill(~later[:, None, :, None], float("nan"))


def composition(model: torch.nn.Module, rank: int = 16) -> Composition:
    """Both composition scores of every head pair (earlier layer -> later layer) of `model`."""
    circuits = head_circuits(model)
    layers, heads, kv_heads, head_dim, hidden = circuits.shape
    if not 1 <= rank <= head_dim:
        raise ConfigError(f"--rank {rank}: a head reads and writes at most head_dim = {head_dim} "
                          f"directions; choose 1..{head_dim}")
    if heads % kv_heads:
        raise ConfigError(f"{heads} query heads do not split into {kv_heads} KV groups")
    raw = {"subspace": subspace_scores(circuits, rank), "frobenius": frobenius_scores(circuits)}
    scores = {m: {kind: later_only(s).float() for kind, s in by_kind.items()} for m, by_kind in raw.items()}
    return Composition(rank, scores, heads // kv_heads)


def random_baselines(rank: int, hidden: int) -> dict[str, float]:
    """What each score is, on average, for directions drawn at random (for reading the numbers):
    E||U^T V||_F^2 = r^2 / D for random r-subspaces, E||R M||_F^2 = ||R||^2 ||M||^2 / D."""
    return {"subspace": math.sqrt(rank / hidden), "frobenius": 1 / math.sqrt(hidden)}
