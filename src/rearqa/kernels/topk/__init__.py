"""Top-k token selection for SpAtten's cascade token pruning (Wang, Zhang, Han, HPCA 2021).

SpAtten keeps, at each layer, the tokens with the most accumulated attention (importance in,
kept indices out): a top-k per sequence over at most a few thousand positions, at the reader's
batch sizes (1 to 64). triton.py holds a one-program-per-row sort kernel; the issue ships it only
if it beats torch.topk there, and no GPU has measured it yet, so **this op dispatches to
torch.topk on every device** (its Triton side is unset). scripts/kernel_bench.py times both;
registering `rearqa.kernels.topk.triton:topk_triton` below is the change a win would justify.
SpAtten itself (reader/backbone/spatten/state.py) ranks with a stable double argsort and a count
per row, which this op does not replace: torch.topk breaks ties in no promised order.

    topk(scores (B, S), k, *, largest=True) -> (values (B, k), indices (B, k) int64)
"""
from rearqa.kernels.dispatch import KernelOp
from rearqa.kernels.topk.reference import topk_reference

topk = KernelOp("topk", reference=topk_reference, triton=None)

__all__ = ["topk", "topk_reference"]
