"""DV-LoRA / GDV-LoRA settings: the shared ones plus the scaling vectors' init and the gate."""
from __future__ import annotations

from dataclasses import dataclass

from rearqa.config_errors import ConfigError
from rearqa.reader.adapters.config import AdapterSettings

GATES = ("none", "scalar", "input")
INITS = ("zero", "random")


@dataclass
class DVLoraSettings(AdapterSettings):
    """h = W0 x + g * (alpha / r) diag(b) B diag(d) A x, with gate g per `gate`."""

    gate: str = "none"  # "none": DV-LoRA (g = 1); "scalar": GDV-LoRA, g = sigmoid(a learned scalar),
    #                     exports to plain LoRA; "input": GDV-LoRA, g = sigmoid(w.x + c) per token, hf only
    vector_init: float = 1.0  # initial value of every entry of the scaling vectors b and d
    init: str = "zero"  # "zero": B = 0 (starts at the base model); "random": small random B, b and d

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gate not in GATES:
            raise ConfigError(f"adapter gate={self.gate!r}: must be one of {list(GATES)}")
        if isinstance(self.vector_init, bool) or not isinstance(self.vector_init, (int, float)) \
                or self.vector_init == 0:
            raise ConfigError(f"adapter vector_init={self.vector_init!r}: must be a nonzero number "
                              "(0 would block the gradient of A and B), e.g. vector_init: 1.0")
        if self.init not in INITS:
            raise ConfigError(f"adapter init={self.init!r}: must be one of {list(INITS)}")
