"""TPLA's settings and its registry of latent rotations (torch-free)."""
from __future__ import annotations

from dataclasses import dataclass

from rearqa.config_errors import ConfigError

# How the latent space is rotated before it is sliced into shards (rotation.py builds each):
#   none      the latent as converted (TransMLA's latent is already in PCA order: shard 0 gets
#             the high-energy directions)
#   hadamard  the normalised Sylvester Hadamard matrix: every rotated direction carries the mean
#             energy; needs kv_lora_rank a power of two
#   pca       per layer, the principal directions of calibration latents dealt round-robin to the
#             shards, so each shard holds a representative share of every energy level
ROTATIONS = ("none", "hadamard", "pca")


@dataclass
class TPLAConfig:
    """How decode attention is split across shards."""

    shards: int = 2  # g: latent slices, one per device; 1 is full MLA (exact)
    rotation: str = "hadamard"  # one of ROTATIONS, folded into the weights before slicing
    # multiplies each shard's no-RoPE logits: 1 is TPLA as described (each shard's share of the
    # full logits); g makes each an estimate of the full ones (an experiment, not the paper's)
    nope_scale: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.shards, bool) or not isinstance(self.shards, int) or self.shards < 1:
            raise ConfigError(f"tpla.shards={self.shards!r}: must be a positive integer")
        if self.rotation not in ROTATIONS:
            raise ConfigError(f"tpla.rotation={self.rotation!r}: one of {list(ROTATIONS)}")
        if not self.nope_scale > 0:
            raise ConfigError(f"tpla.nope_scale={self.nope_scale!r}: must be positive (1: TPLA as described)")

    @property
    def label(self) -> str:
        """How answers, reports and /health name this decode mode ("tpla(2 shards, pca)")."""
        scale = f", nope x{self.nope_scale:g}" if self.nope_scale != 1.0 else ""
        return f"tpla({self.shards} shards, {self.rotation}{scale})"

    def check_model(self, config, prefix: str = "tpla.") -> int:
        """The shard width kv_lora_rank / shards, or a ConfigError naming the valid counts;
        `prefix` names the settings as the user gave them ("reader.tp_" for a reader's)."""
        rank = config.kv_lora_rank
        if rank % self.shards:
            valid = [g for g in range(1, rank + 1) if rank % g == 0 and g <= 16]
            raise ConfigError(f"{prefix}shards={self.shards}: kv_lora_rank {rank} splits evenly into "
                              f"one of {valid} shards")
        if self.rotation == "hadamard" and rank & (rank - 1):
            raise ConfigError(f"{prefix}rotation='hadamard': the Hadamard rotation spans the whole latent "
                              f"and needs a width that is a power of two; kv_lora_rank {rank} is not; use "
                              "'pca' (balances any width) or 'none'")
        return rank // self.shards
