"""SpAtten's attention: eager attention math with the cascade, head pruning, progressive key
quantisation and local value pruning, registered with transformers' attention interface.

Every attention module of an installed model carries the same `SpAttenRun`; transformers calls
`spatten_attention` per layer (module.layer_idx) with the whole cache's keys and values, and the
run's current `SpAttenState` (state.py) decides what is alive. Pruning is by masking: pruned
tokens get the lowest finite score in every later layer and decode step (finite, so a row with
every key masked stays a number), pruned heads' outputs are zeroed, and the FLOPs and KV bytes
that eviction would save are counted instead (state.SpAttenStats).

Keys under progressive quantisation are stored as `quant_bits`-bit symmetric integers per token
and KV head (the cache the accelerator would hold); the first fetch reads the top `key_bits`, and
a softmax row whose max probability is below `flat` is recomputed with all `quant_bits` (its LSBs
fetched). Values and unquantised keys are counted at 2 bytes (a bf16 cache) whatever dtype runs.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from rearqa.reader.backbone.spatten.config import NAME, SpAttenConfig
from rearqa.reader.backbone.spatten.state import DECODE, PREFILL, SpAttenState, newest

CACHE_BYTES = 2  # bytes per value (and per unquantised key element): a bf16 KV cache


def quantised_keys(key: torch.Tensor, bits: int, msb: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(all `bits`, top `msb` bits) of `key` (B, Hkv, S, D) as `bits`-bit symmetric integers per
    token and head, dequantised; the MSB-only key sits at the centre of its truncated bin."""
    levels = 2 ** (bits - 1) - 1
    scale = key.abs().amax(dim=-1, keepdim=True).float().clamp_min(1e-12) / levels  # (B, Hkv, S, 1)
    q = (key.float() / scale).round().clamp(-levels - 1, levels)
    step = 2 ** (bits - msb)  # the low bits dropped: floor to the bin, then its midpoint
    q_msb = torch.floor(q / step) * step + (step - 1) / 2 if step > 1 else q
    return (q * scale).to(key.dtype), (q_msb * scale).to(key.dtype)


def _visible(mask: torch.Tensor | None, batch: int, length: int, keys: int) -> torch.Tensor:
    """(B, T, S) bool: which keys each query may see (causal and padding), from the additive mask."""
    if mask is None:
        causal = torch.ones(length, keys, dtype=torch.bool).tril(keys - length)
        return causal.expand(batch, length, keys)
    mask = mask[..., -keys:]
    if mask.dtype == torch.bool:
        return mask[:, 0].expand(batch, length, keys)
    return (mask[:, 0] > torch.finfo(mask.dtype).min / 2).expand(batch, length, keys)


def _probs(query, key, scaling, mask, alive) -> torch.Tensor:
    """Softmax probabilities (B, H, T, S) exactly as transformers' eager attention, dead keys out."""
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if mask is not None:
        scores = scores + mask
    if not bool(alive.all()):
        scores = scores.masked_fill(~alive[:, None, None, :], torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)


def _repeat(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, Hkv, S, D) -> (B, Hkv * groups, S, D): each KV head serves `groups` query heads."""
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


class SpAttenRun:
    """SpAtten settings of one model and the state of its current generation."""

    def __init__(self, cfg: SpAttenConfig, num_layers: int, heads: int) -> None:
        cfg.check_layers(num_layers)
        self.cfg, self.num_layers, self.heads = cfg, num_layers, heads
        self.state: SpAttenState | None = None
        self.history: list | None = None  # while `track` runs: each generation's stats

    def _state_for(self, layer: int, query: torch.Tensor, keys: int) -> SpAttenState:
        batch, _, length, _ = query.shape
        if layer == 0 and (self.state is None or length == keys):  # a prefill: a new generation
            self.state = SpAttenState(self.cfg, self.num_layers, batch, self.heads, query.device)
            if self.history is not None:
                self.history.append(self.state.stats)
        elif layer == 0:
            self.state.step += 1
            self.state.stats.decode_steps += 1
        self.state.grow(keys)
        return self.state

    def attend(self, layer, query, key, value, mask, scaling):
        """Attention output (B, T, H, D) of one layer; query (B, H, T, D), key/value (B, Hkv, S, D)."""
        cfg = self.cfg
        batch, heads, length, dim = query.shape
        kv_heads, keys = key.shape[1], key.shape[2]
        groups = heads // kv_heads
        state = self._state_for(layer, query, keys)
        visible = _visible(mask, batch, length, keys).to(query.device)  # (B, T, S)
        valid = visible[:, -1, :]  # the newest query sees every real token: (B, S)
        if cfg.prefill or state.step:  # prefill=0: the prompt is read whole, its votes still count
            state.prune_tokens(layer, valid)  # decided on the importance of earlier layers and steps
            state.prune_heads(layer)
        alive = state.alive[:, :keys]
        allowed = visible & alive[:, None, :]  # (B, T, S)
        query_alive = alive[:, keys - length:] & valid[:, keys - length:]  # (B, T)

        if cfg.key_bits:
            k_full, k_msb = quantised_keys(key, cfg.quant_bits, cfg.key_bits)
            probs = _probs(query, _repeat(k_msb, groups), scaling, mask, alive)
            flat = probs.amax(dim=-1) < cfg.flat  # (B, H, T): rows that refetch the LSBs
            if bool(flat.any()):
                full = _probs(query, _repeat(k_full, groups), scaling, mask, alive)
                probs = torch.where(flat[..., None], full, probs)
        else:
            probs = _probs(query, _repeat(key, groups), scaling, mask, alive)
            flat = torch.zeros(probs.shape[:-1], dtype=torch.bool, device=probs.device)

        kept = self._kept_values(probs, allowed)  # (B, H, T, S)
        used = probs if cfg.values >= 1 else probs * kept  # not renormalised: dropped mass is lost
        out = torch.matmul(used, _repeat(value, groups))  # (B, H, T, D)
        if not bool(state.head_alive.all()):
            out = out * state.head_alive[:, :, None, None].to(out.dtype)
        voters = None
        if cfg.window and length > 1:  # the prefill: only the prompt's newest `window` queries vote
            voters = newest(valid, cfg.window)[:, keys - length:]
        state.accumulate(probs, allowed, query_alive, out, voters)
        self._count(state, layer, visible, valid, allowed, query_alive, flat, kept, kv_heads, dim)
        return out.transpose(1, 2).contiguous(), None

    def _kept_values(self, probs: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """(B, H, T, S) bool: per query row, its top `values` share of alive tokens by probability."""
        allowed4 = allowed[:, None].expand_as(probs)
        if self.cfg.values >= 1:
            return allowed4
        share = torch.ceil(allowed.sum(-1) * self.cfg.values - 1e-9).clamp_min(1).long()  # (B, T)
        ranked = probs.masked_fill(~allowed4, -1).sort(dim=-1, descending=True).values
        index = (share - 1)[:, None, :, None].expand(*probs.shape[:-1], 1)
        threshold = ranked.gather(-1, index)  # the share-th largest probability of each row
        return allowed4 & (probs >= threshold)

    def _count(self, state, layer, visible, valid, allowed, query_alive, flat, kept, kv_heads, dim):
        """Add this layer's FLOPs and bytes, unpruned and SpAtten, to the generation's stats."""
        cfg, stats = self.cfg, state.stats
        phase = PREFILL if state.step == 0 else DECODE
        length = visible.shape[1]
        valid_q = valid[:, -length:]  # (B, T)
        dense_pairs = (visible & valid_q[:, :, None]).sum((1, 2)).double()
        live = query_alive[:, None, :] & state.head_alive[:, :, None]  # (B, H, T): computed rows
        per_row = allowed.sum(-1)[:, None, :].double()  # (B, 1, T) alive keys each query sees
        qk = 2 * dim * (live * per_row).sum((1, 2))
        refetch = 2 * dim * ((live & flat) * per_row).sum((1, 2))  # LSB rows: QK counted twice
        kept_live = kept & live[..., None]
        pv = 2 * dim * kept_live.sum((1, 2, 3)).double()
        heads = live.shape[1]
        batch, groups = live.shape[0], heads // kv_heads
        kv_alive = state.head_alive.view(batch, kv_heads, groups).any(-1)  # (B, Hkv)
        tokens = (state.alive[:, :valid.shape[1]] & valid).sum(1).double()  # (B,)
        key_bytes = cfg.key_bits / 8 if cfg.key_bits else CACHE_BYTES
        kv_flat = (live & flat).view(batch, kv_heads, groups, length).any(-1).any(-1) & kv_alive
        lsb_bytes = (cfg.quant_bits - cfg.key_bits) / 8 if cfg.key_bits else 0
        value_tokens = kept_live.view(batch, kv_heads, groups, length, -1).any(2).any(2).sum(-1)
        add = {"dense_flops": 4 * dim * heads * dense_pairs,
               "flops": qk + refetch + pv,
               "dense_kv_bytes": valid.sum(1).double() * kv_heads * dim * 2 * CACHE_BYTES,
               "kv_bytes": dim * (tokens * kv_alive.sum(1) * key_bytes
                                  + tokens * kv_flat.sum(1) * lsb_bytes
                                  + value_tokens.sum(1).double() * CACHE_BYTES),
               "rows": live.sum((1, 2)).double(), "flat_rows": (live & flat).sum((1, 2)).double()}
        for name, value in add.items():
            stats.counts[name][phase, layer] += value.cpu()
        stats.alive_tokens[phase, layer] = tokens.long().cpu()
        stats.alive_heads[phase, layer] = state.head_alive.sum(1).cpu()


def spatten_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """The attention-interface entry point: the module's run attends for its layer."""
    return module.spatten_run.attend(module.layer_idx, query, key, value, attention_mask, scaling)


ALL_ATTENTION_FUNCTIONS.register(NAME, spatten_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, eager_mask)  # the additive float mask eager uses


def attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's self-attention modules: those that know their layer and KV grouping."""
    found = [m for m in model.modules() if hasattr(m, "layer_idx") and hasattr(m, "num_key_value_groups")]
    if not found:
        raise ValueError(f"{type(model).__name__} has no attention modules with layer_idx and "
                         "num_key_value_groups; SpAtten runs on transformers' grouped-query attention")
    return found


def install(model: torch.nn.Module, cfg: SpAttenConfig) -> SpAttenRun:
    """Run `model` with SpAtten at `cfg` from now on; returns the run its modules share."""
    config = model.config
    run = SpAttenRun(cfg, config.num_hidden_layers, config.num_attention_heads)
    for module in attention_modules(model):
        module.spatten_run = run
    model.set_attn_implementation(NAME)
    return run


def saved_state(model: torch.nn.Module) -> SpAttenState | None:
    """A copy of the current generation's state (after a prefill, say), to continue it again later
    with `restore_state`; None before any generation."""
    state = attention_modules(model)[0].spatten_run.state
    return None if state is None else state.select(list(range(state.alive.shape[0])))


def restore_state(model: torch.nn.Module, state: SpAttenState, rows: list[int]) -> None:
    """Continue batch `rows` of a `saved_state` once more: the next forward over a cache of those
    rows sees what was pruned up to the save, not what a continuation since then pruned."""
    attention_modules(model)[0].spatten_run.state = state.select(rows)


@contextmanager
def track(model: torch.nn.Module):
    """Collect the SpAttenStats of every generation run inside the block (a list, filled as they start)."""
    run = attention_modules(model)[0].spatten_run
    run.history = []
    try:
        yield run.history
    finally:
        run.history = None


def attention_flops_ratio(stats: list) -> dict[str, float]:
    """Totals over generations: SpAtten's attention FLOPs and KV bytes over the unpruned model's."""
    def total(name: str, phase: int) -> float:
        return math.fsum(float(s.counts[name][phase].sum()) for s in stats)
    out = {}
    for phase, tag in ((PREFILL, "prefill"), (DECODE, "decode")):
        for name in ("flops", "kv_bytes"):
            dense = total(f"dense_{name}", phase)
            out[f"{tag}_{name}_ratio"] = total(name, phase) / dense if dense else float("nan")
    rows = total("rows", DECODE)
    out["decode_lsb_rate"] = total("flat_rows", DECODE) / rows if rows else 0.0
    return out
