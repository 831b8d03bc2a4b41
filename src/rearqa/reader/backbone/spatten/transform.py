"""SpAtten as an inference-time backbone: parse its budget string, install it, name it, and say
what it did to each prompt of a generation. Torch-free at import, so ReaderConfig can check a
budget string where it enters."""
from __future__ import annotations

from collections.abc import Sequence

from rearqa.reader.backbone.spatten.config import SpAttenConfig, parse_budgets


class SpAtten:
    """The `spatten` entry of INFERENCE_BACKBONES."""

    name = "spatten"
    config_cls = SpAttenConfig

    def parse(self, text: str) -> SpAttenConfig:
        return parse_budgets(text)

    def apply(self, model, cfg: SpAttenConfig):
        """`model` running SpAtten attention at `cfg` (eager math; the weights untouched)."""
        from rearqa.reader.backbone.spatten.attention import install

        install(model, cfg)
        return model

    def label(self, cfg: SpAttenConfig) -> str:
        return cfg.label

    def track(self, model):
        """A context collecting the stats of each generation run inside it (attention.track)."""
        from rearqa.reader.backbone.spatten.attention import track

        return track(model)

    def costs(self, history: list, attention_mask) -> list[dict]:
        """Per example of ONE left-padded generation: SpAttenStats.example_cost plus its prompt
        token count and how many of them the cascade pruned. `attention_mask` (B, S) is the
        prompts' mask (left padding: an example's prompt is the last of the first S positions)."""
        if len(history) != 1:
            raise ValueError(f"{len(history)} SpAtten generations were tracked; one is read at a time")
        stats, width = history[0], attention_mask.shape[1]
        out = []
        for b, n in enumerate(attention_mask.sum(dim=1).tolist()):
            cost = stats.example_cost(b)
            pruned = int((stats.pruned_layer[b, width - n:width] >= 0).sum())
            cost.update(prompt_tokens=n, pruned_prompt_tokens=pruned)
            out.append(cost)
        return out

    def records(self, history: list, attention_mask, texts: Sequence[str],
                offsets: Sequence[Sequence[tuple[int, int]]]) -> list[tuple[dict, object]]:
        """Per example of ONE left-padded generation: its cost (`costs`) and its
        evidence.PromptTrace. `offsets` holds each prompt's token character offsets (no padding)."""
        from rearqa.reader.backbone.spatten.evidence import PromptTrace

        costs = self.costs(history, attention_mask)
        stats, width = history[0], attention_mask.shape[1]
        out = []
        for b, (text, spans, cost) in enumerate(zip(texts, offsets, costs)):
            pruned = stats.pruned_layer[b, width - len(spans):width].tolist()
            out.append((cost, PromptTrace(text, [tuple(s) for s in spans], pruned,
                                          pruned_heads=stats.pruned_heads[b].tolist())))
        return out
