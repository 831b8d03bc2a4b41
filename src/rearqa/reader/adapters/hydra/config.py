"""Hydra's settings: the shared ones (r, alpha for the parallel branch) plus the sequential branch."""
from __future__ import annotations

from dataclasses import dataclass

from rearqa.config_errors import ConfigError
from rearqa.reader.adapters.config import AdapterSettings

INITS = ("zero", "random")


@dataclass
class HydraSettings(AdapterSettings):
    """Hydra: h = W0 x + (alpha / r) B_p A_p x + (sequential_alpha / sequential_r) B_s A_s W0 x."""

    sequential_r: int = 8  # rank of the sequential branch (A_s: (sequential_r, d_out))
    sequential_alpha: float = 16  # scale of the sequential branch: sequential_alpha / sequential_r
    init: str = "zero"  # "zero": B_p = B_s = 0 (starts at the base model); "random": small random B too

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.sequential_r, bool) or not isinstance(self.sequential_r, int) \
                or self.sequential_r < 1:
            raise ConfigError(f"adapter sequential_r={self.sequential_r!r}: must be a positive "
                              "integer, e.g. sequential_r: 8")
        if isinstance(self.sequential_alpha, bool) or not isinstance(self.sequential_alpha, (int, float)) \
                or self.sequential_alpha <= 0:
            raise ConfigError(f"adapter sequential_alpha={self.sequential_alpha!r}: must be a number "
                              "> 0, e.g. sequential_alpha: 16")
        if self.init not in INITS:
            raise ConfigError(f"adapter init={self.init!r}: must be one of {list(INITS)}")
