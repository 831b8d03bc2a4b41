"""Block-LoRA settings: the shared ones plus the number of up-projection blocks sharing one A."""
from __future__ import annotations

from dataclasses import dataclass

from rearqa.config_errors import ConfigError
from rearqa.reader.adapters.config import AdapterSettings

INITS = ("zero", "random")
SHARES = ("rank", "input")


@dataclass
class BlockLoraSettings(AdapterSettings):
    """share "rank":  h = W0 x + (alpha / r) (B_1 + ... + B_n) A_s x, A_s (r/n, d_in), B_i (d_out, r/n);
    share "input": h = W0 x + (alpha / r) B A_s (x_1 + ... + x_n), A_s (r, d_in/n), B (d_out, r);
    n = blocks (layer.py says both readings in full)."""

    blocks: int = 2  # n: the blocks that share one down-projection A_s
    init: str = "zero"  # "zero": B = 0 (starts at the base model); "random": small random B (tests)
    share: str = "rank"  # which dimension is partitioned: LoRA's rank, or the input's columns

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.blocks, bool) or not isinstance(self.blocks, int) or self.blocks < 1:
            raise ConfigError(f"adapter blocks={self.blocks!r}: must be a positive integer, e.g. blocks: 2")
        if self.share not in SHARES:
            raise ConfigError(f"adapter share={self.share!r}: must be one of {list(SHARES)} (rank: the "
                              "rank's blocks share A_s; input: the input's column blocks share A_s)")
        if self.share == "rank" and self.r % self.blocks:
            divisors = [n for n in range(1, self.r + 1) if self.r % n == 0]
            raise ConfigError(f"adapter blocks={self.blocks} does not divide r={self.r} (each block has "
                              f"rank r / blocks): use blocks in {divisors}, or an r that blocks divides")
        if self.init not in INITS:
            raise ConfigError(f"adapter init={self.init!r}: must be one of {list(INITS)}")
