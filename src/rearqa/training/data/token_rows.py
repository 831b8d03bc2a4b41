"""Training rows tokenised once, and their collation into length-sorted, padded chunks.

A task tokenises every training row when it is built (REAR: the input of every passage of every
group, through `rear_inputs`; a baseline: its encoded chat examples) and keeps them here as three
flat CPU tensors with offsets: token ids, the LM label mask and the passage mask, 6 bytes a token
instead of a Python list of ints. A step then only collates: `collate_chunks` takes the step's
rows, cuts them into `chunks` groups of rows of similar length (sorted by length when there is
more than one chunk, so each chunk is padded only to its own longest row), and writes each chunk
right-padded into pinned tensors copied to the device without blocking.

Everything the forward pass and the losses need to find their positions is computed here on the
CPU from the cached lengths: the flat index of every position whose next token carries LM loss
and that token, the score position of every REAR row, the token counts. The training step never
reads a GPU tensor back to learn a size.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class TokenRows:
    """Rows of token ids with their LM label mask (and REAR's passage mask and score position)."""

    ids: torch.Tensor  # (total,) int32, every row's tokens end to end
    label_mask: torch.Tensor  # (total,) bool: the token carries LM loss (predicted at t - 1)
    passage_mask: torch.Tensor | None  # (total,) bool: a passage token (REAR's pooled tokens)
    offsets: torch.Tensor  # (rows + 1,) int64: row i is [offsets[i], offsets[i + 1])
    score_positions: list[int] | None  # REAR: index of <GENERATE_SCORE> in each row
    lengths: list[int] = field(init=False)
    starts: list[int] = field(init=False)  # offsets as Python ints, for slicing without tensors

    def __post_init__(self) -> None:
        self.starts = self.offsets.tolist()
        self.lengths = [b - a for a, b in zip(self.starts, self.starts[1:])]

    def __len__(self) -> int:
        return len(self.lengths)

    @classmethod
    def from_lists(cls, ids: list[list[int]], label_mask: list[list[bool]],
                   passage_mask: list[list[bool]] | None = None,
                   score_positions: list[int] | None = None) -> "TokenRows":
        lengths = [len(row) for row in ids]
        offsets = torch.zeros(len(ids) + 1, dtype=torch.int64)
        offsets[1:] = torch.tensor(lengths, dtype=torch.int64).cumsum(0)
        def flat(rows, dtype):
            return torch.tensor([t for row in rows for t in row], dtype=dtype)

        return cls(flat(ids, torch.int32), flat(label_mask, torch.bool),
                   flat(passage_mask, torch.bool) if passage_mask is not None else None,
                   offsets, score_positions)

    @classmethod
    def concat(cls, parts: list["TokenRows"]) -> "TokenRows":
        """One TokenRows of the rows of `parts`, in order (built piece by piece, joined once)."""
        if not parts:
            raise ValueError("TokenRows.concat needs at least one part")
        lengths = [n for p in parts for n in p.lengths]
        offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
        offsets[1:] = torch.tensor(lengths, dtype=torch.int64).cumsum(0)
        has_passages = parts[0].passage_mask is not None
        return cls(torch.cat([p.ids for p in parts]), torch.cat([p.label_mask for p in parts]),
                   torch.cat([p.passage_mask for p in parts]) if has_passages else None, offsets,
                   [s for p in parts for s in p.score_positions]
                   if parts[0].score_positions is not None else None)

    def row(self, i: int) -> slice:
        return slice(self.starts[i], self.starts[i + 1])


@dataclass
class Chunk:
    """Rows of one forward pass, right-padded to their longest; every tensor on the device."""

    input_ids: torch.Tensor  # (n, T)
    lm_index: torch.Tensor  # (m,) flat index into the (n * T) hidden states: position t - 1 ...
    lm_targets: torch.Tensor  # (m,) ... of each labelled token t, and that token
    score_index: torch.Tensor | None  # (n,) flat index of each row's score position (REAR)
    positions: torch.Tensor | None  # (n,) each row's score position (REAR)
    passage_mask: torch.Tensor | None  # (n, T) bool (REAR's lowrank_attn head)


@dataclass
class StepRows:
    """A micro-batch's rows as chunks, with the counts the loop and the losses need (CPU ints)."""

    chunks: list[Chunk]
    order: torch.Tensor | None  # (N,) row i of the micro-batch is row order[i] of the chunks
    #                             concatenated; None when the chunks keep the micro-batch order
    tokens: int  # non-pad input tokens (the training-token count)
    padded_tokens: int  # input positions including padding: the compute spent
    lm_tokens: int  # labelled tokens: the LM loss is their mean
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # task-specific (grades ...)


def chunk_plan(lengths: list[int], chunks: int) -> list[list[int]]:
    """Positions into `lengths` per chunk: as they are for one chunk; else sorted longest first
    (ties in order) and cut into `chunks` runs of near-equal row counts, so that each run is
    padded only to its own longest row."""
    if chunks < 1:
        raise ValueError(f"chunks={chunks}: must be >= 1")
    if chunks == 1:
        return [list(range(len(lengths)))]
    ranked = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    n = len(ranked)
    bounds = [round(c * n / chunks) for c in range(chunks + 1)]
    return [ranked[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """CPU tensor -> `device` without blocking the host: pinned first, then an asynchronous copy
    (the host allocator keeps the pinned block until the copy is done). A no-op off CUDA."""
    if device.type != "cuda":
        return tensor
    return (tensor if tensor.is_pinned() else tensor.pin_memory()).to(device, non_blocking=True)


def collate_chunks(rows: TokenRows, row_ids: list[int], chunks: int, pad_token_id: int,
                   device: torch.device) -> StepRows:
    """The rows `row_ids` (in micro-batch order) as `chunks` right-padded chunks on `device`."""
    lengths = [rows.lengths[r] for r in row_ids]
    plan = chunk_plan(lengths, chunks)
    out, padded, lm_tokens = [], 0, 0
    for positions in plan:
        width = max(lengths[p] for p in positions)
        n = len(positions)
        ids = torch.full((n, width), pad_token_id, dtype=torch.int64,
                         pin_memory=device.type == "cuda")
        labelled = torch.zeros((n, width), dtype=torch.bool)
        passages = (torch.zeros((n, width), dtype=torch.bool)
                    if rows.passage_mask is not None else None)
        for k, p in enumerate(positions):
            span, length = rows.row(row_ids[p]), lengths[p]
            ids[k, :length] = rows.ids[span]
            labelled[k, :length] = rows.label_mask[span]
            if passages is not None:
                passages[k, :length] = rows.passage_mask[span]
        # Token t is predicted from the hidden state at t - 1: flat index k * width + t - 1.
        row, col = labelled[:, 1:].nonzero(as_tuple=True)  # row-major, as lm_loss_at_labels
        lm_tokens += len(row)
        padded += n * width
        score = (torch.tensor([rows.score_positions[row_ids[p]] for p in positions])
                 if rows.score_positions is not None else None)
        out.append(Chunk(
            input_ids=to_device(ids, device), lm_index=to_device(row * width + col, device),
            lm_targets=to_device(ids[row, col + 1], device),
            score_index=to_device(torch.arange(n) * width + score, device) if score is not None
            else None,
            positions=to_device(score, device) if score is not None else None,
            passage_mask=to_device(passages, device) if passages is not None else None))
    order = None
    if chunks > 1:
        flat = torch.tensor([p for positions in plan for p in positions])
        inverse = torch.empty(len(flat), dtype=torch.int64)
        inverse[flat] = torch.arange(len(flat))
        order = to_device(inverse, device)
    return StepRows(out, order, sum(lengths), padded, lm_tokens)
