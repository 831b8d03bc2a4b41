"""The adapter wing's names, torch-free: the registry and the settings every method shares."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rearqa.config_errors import ConfigError

# method -> "module:Class" of its AdapterMethod.
ADAPTERS: dict[str, str] = {
    "lora": "rearqa.reader.adapters.lora:LoraMethod",
    "hydra": "rearqa.reader.adapters.hydra:HydraMethod",
    "dvlora": "rearqa.reader.adapters.dvlora:DVLoraMethod",
    "blocklora": "rearqa.reader.adapters.blocklora:BlockLoraMethod",
    "masa": "rearqa.reader.adapters.masa:MasaMethod",
}


def saved_adapter_config(adapter_dir: str | Path) -> dict:
    """The adapter_config.json PEFT's save_pretrained wrote in `adapter_dir` (refused when absent)."""
    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        raise ConfigError(f"adapter {adapter_dir} has no adapter_config.json; give the directory "
                          "peft's save_pretrained wrote")
    return json.loads(path.read_text())


@dataclass
class AdapterSettings:
    """Settings of every LoRA-family method (each method's config subclasses this)."""

    r: int = 16  # rank of the low-rank update
    alpha: float = 32  # scale: the update is multiplied by alpha / r
    dropout: float = 0.05  # dropout on the adapter's input during training
    target: str | list[str] = "all-linear"  # PEFT target_modules: every linear layer but the output layer

    def __post_init__(self) -> None:
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ConfigError(f"adapter r={self.r!r}: must be a positive integer, e.g. r: 16")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or self.alpha <= 0:
            raise ConfigError(f"adapter alpha={self.alpha!r}: must be a number > 0, e.g. alpha: 32")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) \
                or not 0 <= self.dropout < 1:
            raise ConfigError(f"adapter dropout={self.dropout!r}: must be in [0, 1), e.g. dropout: 0.05")
        if not isinstance(self.target, (str, list)) or not self.target:
            raise ConfigError(f"adapter target={self.target!r}: give 'all-linear' or a list of "
                              "module names (e.g. [q_proj, v_proj])")
