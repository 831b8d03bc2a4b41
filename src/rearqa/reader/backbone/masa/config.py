"""MASA's settings, and the check that needs the model's layer count (torch-free)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rearqa.config_errors import ConfigError
from rearqa.reader.backbone.config import TransformConfig

ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")  # what the paper shares
MLP_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")  # a Llama's MLP, shared on request


@dataclass
class MasaConfig(TransformConfig):
    """How many atoms each projection type keeps, and which projection types share them."""

    atoms: int = 10  # S atoms per projection type: 1 to the layer count (SmolLM2: 30, exact at 30)
    projections: list[str] = field(default_factory=lambda: list(ATTENTION_PROJECTIONS))  # leaf names

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.atoms, bool) or not isinstance(self.atoms, int) or self.atoms < 1:
            raise ConfigError(f"masa.atoms={self.atoms!r}: must be a positive integer (atoms per "
                              "projection type), e.g. --atoms 10")
        if isinstance(self.projections, str):
            self.projections = [p for p in self.projections.split(",") if p]
        if not isinstance(self.projections, (list, tuple)) or not self.projections \
                or not all(isinstance(p, str) and p for p in self.projections) \
                or len(set(self.projections)) != len(self.projections):
            raise ConfigError(f"masa.projections={self.projections!r}: give distinct projection "
                              f"names, e.g. {list(ATTENTION_PROJECTIONS)} (or add {list(MLP_PROJECTIONS)})")
        self.projections = list(self.projections)

    def check_model(self, config: Any) -> int:
        """The model's layer count, or a ConfigError naming the atom counts it takes."""
        layers = config.num_hidden_layers
        if self.atoms > layers:
            raise ConfigError(f"masa.atoms={self.atoms}: this model has {layers} layers, so each "
                              f"projection type takes 1 to {layers} atoms ({layers} rebuilds the "
                              "weights exactly; the paper's saving is a third of the layers)")
        return layers
