"""MASA's settings: the shared ones plus the dictionary size and the init."""
from __future__ import annotations

from dataclasses import dataclass, field

from rearqa.config_errors import ConfigError
from rearqa.reader.adapters.config import AdapterSettings

INITS = ("zero", "random")
ATTENTION_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj"]  # what the paper shares


@dataclass
class MasaSettings(AdapterSettings):
    """h = W0_l x + (alpha / r) sum_s c_{l,s} D^p_s x: the S atoms D^p_s of projection type p are
    shared by every layer l; r is also the rank of the plain-LoRA export (truncated SVD)."""

    atoms: int = 4  # S: atoms per projection type, shared across the layers
    init: str = "zero"  # "zero": atoms D = 0 (starts at the base model); "random": small random atoms too
    # the projections adapted (each name one dictionary); the paper's: attention q, k, v, o
    target: str | list[str] = field(default_factory=lambda: list(ATTENTION_PROJECTIONS))

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.atoms, bool) or not isinstance(self.atoms, int) or self.atoms < 1:
            raise ConfigError(f"adapter atoms={self.atoms!r}: must be a positive integer (atoms "
                              "shared by the layers of each projection type), e.g. atoms: 4")
        if self.init not in INITS:
            raise ConfigError(f"adapter init={self.init!r}: must be one of {list(INITS)}")
