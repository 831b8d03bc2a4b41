"""SpAtten's budgets (torch-free): a typed config, its schedule over layers, and the budget string.

A budget string names the method and its settings, `spatten:tokens=0.6,heads=0.8,key_bits=4`;
`spatten` alone keeps the defaults below. Every share is of what the unpruned model would use.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

from rearqa.config_errors import ConfigError

NAME = "spatten"


@dataclass(frozen=True)
class SpAttenConfig:
    """How much of the attention SpAtten keeps (all 1.0 and key_bits 0: the model unchanged)."""

    tokens: float = 1.0  # share of the prompt's tokens alive at the last layer, in (0, 1]
    heads: float = 1.0  # share of query heads alive at the last layer, in (0, 1]
    start_layer: int = 2  # layers before it prune nothing (the paper leaves the first layers whole)
    recent: int = 16  # the newest tokens (the question, the token being decoded) are never pruned; >= 1
    key_bits: int = 0  # MSBs of each quant_bits-bit key fetched first; 0 = keys at model precision
    quant_bits: int = 8  # width of the integer keys the cache would hold when key_bits is set
    flat: float = 0.1  # a softmax row whose max probability is below this refetches the keys' LSBs
    values: float = 1.0  # per query, the share of its alive tokens whose values are fetched, in (0, 1]
    window: int = 0  # prefill votes: 0 = every query (SpAtten); W = only the newest W prompt queries
    prefill: int = 1  # 1 = the cascade prunes in the prefill too (SpAtten); 0 = the prompt is read whole

    def __post_init__(self) -> None:
        for name in ("tokens", "heads", "values"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= 1:
                raise ConfigError(f"spatten {name}={value!r}: a share kept, in (0, 1] (1 keeps all)")
        for name, low in (("start_layer", 0), ("recent", 1), ("key_bits", 0), ("window", 0), ("prefill", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"spatten {name}={value!r}: an integer >= {low}")
        if self.prefill not in (0, 1):
            raise ConfigError(f"spatten prefill={self.prefill!r}: 1 prunes in the prefill (SpAtten), "
                              "0 reads the prompt whole and prunes from the first decode step")
        if self.quant_bits not in range(2, 17):
            raise ConfigError(f"spatten quant_bits={self.quant_bits!r}: an integer in 2..16")
        if self.key_bits > self.quant_bits:
            raise ConfigError(f"spatten key_bits={self.key_bits}: 0 (off) or 1..quant_bits "
                              f"({self.quant_bits}): the MSBs of a {self.quant_bits}-bit key")
        if not isinstance(self.flat, (int, float)) or not 0 <= self.flat <= 1:
            raise ConfigError(f"spatten flat={self.flat!r}: a max-probability threshold in [0, 1] "
                              "(0 never fetches the LSBs, 1 always does)")

    @property
    def keeps_all(self) -> bool:
        """True when nothing is pruned or quantised: the run equals the plain eager model."""
        return self.tokens == 1 and self.heads == 1 and self.values == 1 and not self.key_bits

    @property
    def label(self) -> str:
        """The canonical budget string ("spatten:tokens=0.6,heads=0.8,...", every setting)."""
        defaults_left_out = {"window": 0, "prefill": 1}  # so the labels from before these settings hold
        return f"{NAME}:" + ",".join(f"{f.name}={getattr(self, f.name):g}" for f in fields(self)
                                     if defaults_left_out.get(f.name, None) != getattr(self, f.name))

    def check_layers(self, num_layers: int) -> None:
        if self.start_layer >= num_layers:
            raise ConfigError(f"spatten start_layer={self.start_layer}: the model has {num_layers} "
                              f"layers; choose 0..{num_layers - 1}")


def keep_share(share: float, layer: int, num_layers: int, start_layer: int) -> float:
    """The share kept at `layer`: 1 before `start_layer`, then falling linearly to `share` at the
    last layer (the first pruning layer already drops one step)."""
    if layer < start_layer or share >= 1:
        return 1.0
    steps = num_layers - start_layer
    return 1 - (1 - share) * (layer - start_layer + 1) / steps


def keep_count(share: float, total: int, layer: int, num_layers: int, start_layer: int) -> int:
    """How many of `total` items are alive at `layer` (at least one)."""
    return max(1, math.ceil(keep_share(share, layer, num_layers, start_layer) * total - 1e-9))


def parse_budgets(text: str) -> SpAttenConfig:
    """`spatten` or `spatten:key=value,...` -> SpAttenConfig; a bad key or value is refused with
    the valid keys and ranges."""
    name, _, settings = text.strip().partition(":")
    if name != NAME:
        raise ConfigError(f"backbone {text!r}: an inference-time backbone is written "
                          f"'{NAME}[:tokens=0.6,heads=0.8,...]'")
    types = {f.name: f.type for f in fields(SpAttenConfig)}
    values: dict[str, float | int] = {}
    for item in filter(None, (s.strip() for s in settings.split(","))):
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or key not in types:
            raise ConfigError(f"backbone {text!r}: {item!r} is not key=value with a key of {list(types)}")
        try:
            values[key] = int(raw) if types[key] == "int" else float(raw)
        except ValueError:
            raise ConfigError(f"backbone {text!r}: {key}={raw!r} is not a{'n integer' if types[key] == 'int' else ' number'}") from None
    return SpAttenConfig(**values)
