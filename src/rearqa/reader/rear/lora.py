"""LoRA for the REAR model: adapters on every linear layer but the output layer, plus the new rows.

The adapter itself is the adapter wing's `lora` method (rearqa.reader.adapters.lora); what is
REAR's own is which vocabulary rows train with it. `target_modules="all-linear"` puts LoRA on every nn.Linear except the model's output
layer (PEFT leaves `get_output_embeddings()` out of "all-linear"; tests check it). The old
vocabulary stays frozen; the REAR rows that must learn are made trainable with PEFT's
`trainable_token_indices`, which keeps a small (n_new, D) tensor of replacement rows per layer:

    tied (SmolLM2)  one set on the shared matrix: <BEGIN_QUERY>, <GENERATE_SCORE>, <RELEVANT>,
                    <IRRELEVANT> (inputs) and <RANK_SCORE> (the linear head); PEFT ties the
                    output layer's rows to the same tensor
    untied          inputs: the four prompt/judgment tokens; outputs: <RELEVANT>, <IRRELEVANT>
                    (the LM predicts them) and <RANK_SCORE> (the linear head)

<RANK_REF> is in neither set, so it stays exactly zero. The lowrank_attn head's module is outside
the PEFT wrapper and stays trainable. PEFT stores each trainable row by VALUE, not as a delta, so
keep weight decay off those tensors (`no_decay_parameter_names`): decay would shrink the rows
toward zero.
"""
from __future__ import annotations

from rearqa.reader.adapters import AdapterSettings, wrap
from rearqa.reader.adapters.lora.config import LoraSettings
from rearqa.reader.rear.model import RearModel


def _module_name(model, module) -> str:
    return next(name for name, m in model.named_modules() if m is module)


def trainable_token_indices(model: RearModel) -> dict[str, list[int]]:
    """Embedding module name -> REAR rows to train there (see the module docstring)."""
    ids = model.token_ids
    lm = model.causal_lm
    inputs = [ids.begin_query, ids.generate_score, ids.relevant, ids.irrelevant]
    outputs = [ids.relevant, ids.irrelevant] + ([ids.rank_score] if model.rank_head is None else [])
    in_name = _module_name(lm, lm.get_input_embeddings())
    if model.tied_embeddings:
        return {in_name: sorted(set(inputs) | set(outputs))}
    return {in_name: inputs, _module_name(lm, lm.get_output_embeddings()): outputs}


def add_lora(model: RearModel, r: int = 16, alpha: int = 32, dropout: float = 0.05,
             target: str | list[str] = "all-linear", method: str = "lora",
             settings: AdapterSettings | None = None) -> RearModel:
    """Wrap `model.lm` with LoRA, or the LoRA-family `method` with its `settings` (which then
    replace r / alpha / dropout / target), in place; returns the model. Trainable afterwards: the
    adapter's tensors, the REAR rows of `trainable_token_indices`, and the lowrank_attn head if any."""
    if model.is_lora:
        raise ValueError("the model already has LoRA adapters")
    if settings is None:
        settings = LoraSettings(r=r, alpha=alpha, dropout=dropout, target=target)
    model.lm = wrap(method, model.causal_lm, settings, trainable_token_indices(model))
    if model.rank_head is not None:
        model.rank_head.requires_grad_(True)
    return model


def trainable_parameter_counts(model: RearModel) -> dict[str, int]:
    """Trainable parameters by kind: lora, token_rows, rank_head, other (should be 0)."""
    counts = {"lora": 0, "token_rows": 0, "rank_head": 0, "other": 0}
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        kind = ("lora" if "lora_" in name else "token_rows" if "trainable_tokens" in name
                else "rank_head" if name.startswith("rank_head.") else "other")
        counts[kind] += param.numel()
    return counts


def no_decay_parameter_names(model: RearModel) -> list[str]:
    """Trainable parameters to keep out of weight decay: the new token rows (stored by value)."""
    return [name for name, p in model.named_parameters()
            if p.requires_grad and "trainable_tokens" in name]
