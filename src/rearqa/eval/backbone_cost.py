"""What an inference-time backbone (SpAtten) saved over a run, from its rows.

Each row of a run read with `--backbone spatten:...` carries the answer's `backbone_cost`
(`SpAttenStats.example_cost` plus prompt and pruned token counts, and the reader's linear-layer
FLOPs per token) and its `evidence` (the gold-answer tokens inside the given passages and how many
the cascade pruned). The summary sums the absolute counts over questions before dividing, so a
ratio is the run's total against the unpruned model's total, not a mean of per-question ratios.
Attention FLOPs and KV bytes are what eviction would spend; the model masks (nothing is freed),
and the linear layers run on every token either way, which is why total FLOPs move less.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _sum(costs: Sequence[dict], key: str) -> float:
    return float(sum(c.get(key, 0.0) for c in costs))


def cost_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The run's attention FLOPs, KV bytes, total FLOPs and evidence pruning, pruned against
    unpruned; None when no row carries a backbone cost."""
    costs = [r["backbone_cost"] for r in rows if r.get("backbone_cost")]
    if not costs:
        return None
    out: dict[str, Any] = {"questions": len(costs)}
    steps = _sum(costs, "decode_steps")
    for phase in ("prefill", "decode"):
        flops, dense = _sum(costs, f"{phase}_flops"), _sum(costs, f"{phase}_dense_flops")
        out[f"{phase}_attention_flops_ratio"] = _ratio(flops, dense)
        out[f"{phase}_kv_bytes_ratio"] = _ratio(_sum(costs, f"{phase}_kv_bytes"),
                                                _sum(costs, f"{phase}_dense_kv_bytes"))
        tokens = _sum(costs, "prompt_tokens") if phase == "prefill" else steps
        linear = float(sum(c.get("linear_flops_per_token", 0.0) for c in costs)) / len(costs) * tokens
        out[f"{phase}_total_flops_ratio"] = _ratio(flops + linear, dense + linear)
    # the whole question (prompt read + answer decoded): what a short answer's savings come to
    out["question_attention_flops_ratio"] = _ratio(_sum(costs, "prefill_flops") + _sum(costs, "decode_flops"),
                                                   _sum(costs, "prefill_dense_flops") + _sum(costs, "decode_dense_flops"))
    out["decode_attention_flops_per_token"] = _ratio(_sum(costs, "decode_flops"), steps)
    out["decode_dense_attention_flops_per_token"] = _ratio(_sum(costs, "decode_dense_flops"), steps)
    out["decode_kv_bytes_per_token"] = _ratio(_sum(costs, "decode_kv_bytes"), steps)
    out["decode_dense_kv_bytes_per_token"] = _ratio(_sum(costs, "decode_dense_kv_bytes"), steps)
    out["decode_lsb_rate"] = _ratio(_sum(costs, "decode_flat_rows"), _sum(costs, "decode_rows"))
    out["pruned_prompt_token_share"] = _ratio(_sum(costs, "pruned_prompt_tokens"),
                                              _sum(costs, "prompt_tokens"))
    out["evidence"] = evidence_summary(rows)
    return out


def evidence_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Gold-answer tokens inside the given passages, summed over the questions that had any, and
    the share the cascade pruned (with the layers it pruned them at)."""
    tokens = pruned = questions = hit = 0
    by_layer: Counter = Counter()
    for row in rows:
        evidence = row.get("evidence")
        if not evidence or not evidence["answer_tokens"]:
            continue
        questions += 1
        tokens += evidence["answer_tokens"]
        pruned += evidence["pruned"]
        hit += evidence["pruned"] > 0
        by_layer.update({int(k): v for k, v in evidence["by_layer"].items()})
    return {"questions_with_evidence": questions, "answer_tokens": tokens, "pruned": pruned,
            "share": _ratio(pruned, tokens), "questions_with_pruned_evidence": hit,
            "by_layer": dict(sorted(by_layer.items()))}
