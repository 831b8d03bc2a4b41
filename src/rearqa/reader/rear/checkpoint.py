"""Saving and loading REAR models: safetensors and JSON only, never pickle.

A saved directory always holds `rear_config.json` (RearConfig incl. routing threshold and gamma,
token ids, base vocabulary size, kind) and the tokenizer with the REAR tokens. Then, by kind:

    plain   the full causal LM, written by transformers (config.json + model.safetensors); the
            directory is itself an AutoModelForCausalLM checkpoint
    lora    adapter/ (PEFT: adapter_config.json + adapter_model.safetensors) holding the LoRA
            matrices and ONLY the trained new-token rows (PEFT trainable tokens); the base
            weights are re-read from the base model directory and the REAR rows re-initialised
            the same deterministic way, so <RANK_REF> is zero again without being stored

plus `rank_head.safetensors` for the lowrank_attn head. `merge_rear` writes the plain kind with the
LoRA merged, which is what the vLLM engine serves (for the linear head, whose weights are the
<RANK_SCORE> row).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from rearqa.files import atomic_write

FORMAT = 1
CONFIG_FILE = "rear_config.json"
HEAD_FILE = "rank_head.safetensors"
ADAPTER_DIR = "adapter"


def _write_common(model, path: Path, kind: str) -> None:
    from rearqa.config_base import to_dict

    if model.rank_head is not None:
        from safetensors.torch import save_file

        save_file({k: v.detach().contiguous().cpu() for k, v in model.rank_head.state_dict().items()},
                  path / HEAD_FILE)
    model.tokenizer.save_pretrained(path)
    meta = {"format": FORMAT, "kind": kind, "config": to_dict(model.config),
            "token_ids": model.token_ids.to_dict(), "base_vocab_size": model.base_vocab_size,
            "base_model_dir": model.base_model_dir, "tied_embeddings": model.tied_embeddings,
            "head_file": HEAD_FILE if model.rank_head is not None else None}
    (path / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def save_rear(model, path: str | Path) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.export_linear_head()  # a trained linear head is saved as its row and offset
    model.check_ref_row_zero()
    if model.is_lora:
        # save_embedding_layers=False: PEFT would otherwise store the whole resized embedding.
        model.lm.save_pretrained(path / ADAPTER_DIR, save_embedding_layers=False)
        _write_common(model, path, "lora")
    else:
        model.lm.save_pretrained(path)
        _write_common(model, path, "plain")
    return path


def merge_rear(model, out_dir: str | Path) -> Path:
    """Plain checkpoint: LoRA and trainable token rows merged into a copy of the model."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.export_linear_head()
    model.check_ref_row_zero()
    lm = copy.deepcopy(model.lm).merge_and_unload() if model.is_lora else model.lm
    plain = type(model)(lm, model.tokenizer, model.config, model.token_ids,
                        model.base_vocab_size, model.base_model_dir)
    plain.rank_head = model.rank_head
    plain.check_ref_row_zero()
    lm.save_pretrained(out_dir)
    _write_common(plain, out_dir, "plain")
    return out_dir


def write_rear_files(model, lm, out_dir: str | Path) -> Path:
    """The REAR files (rear_config.json as a plain checkpoint, tokenizer, rank head) beside a
    causal LM `lm` already saved in `out_dir`: a converted backbone of `model`'s merged weights
    (rearqa convert --from a REAR checkpoint). `lm` keeps the REAR rows it was converted with."""
    out_dir = Path(out_dir)
    plain = type(model)(lm, model.tokenizer, model.config, model.token_ids,
                        model.base_vocab_size, model.base_model_dir)
    plain.rank_head = model.rank_head
    plain.check_ref_row_zero()
    _write_common(plain, out_dir, "plain")
    return out_dir


def read_meta(path: str | Path) -> dict:
    file = Path(path) / CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{path} has no {CONFIG_FILE}; it is not a REAR checkpoint "
                                "(RearModel.save_pretrained writes one)")
    meta = json.loads(file.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{file}: format {meta.get('format')!r} is not {FORMAT}")
    return meta


def load_rear(cls, path: str | Path, base_model_dir: str | Path | None, dtype: torch.dtype | None,
              is_trainable: bool):
    from transformers import AutoTokenizer

    from rearqa.config_base import from_dict
    from rearqa.reader.backbone.loading import load_causal_lm
    from rearqa.reader.rear.config import RearConfig

    path = Path(path)
    meta = read_meta(path)
    config = from_dict(RearConfig, meta["config"], "rear")
    tokenizer = AutoTokenizer.from_pretrained(path)
    if meta["kind"] == "lora":
        base_dir = base_model_dir or meta["base_model_dir"]
        if not base_dir or not (Path(base_dir) / "config.json").is_file():
            raise FileNotFoundError(f"{path} is a LoRA checkpoint; its base model {base_dir!r} is "
                                    "not a transformers checkpoint: pass base_model_dir=")
        base = load_causal_lm(base_dir, dtype)
        model = cls.from_base(base, tokenizer, config, init_new_rows=True, base_model_dir=base_dir)
        if model.base_vocab_size != meta["base_vocab_size"]:
            raise ValueError(f"base model {base_dir} has {model.base_vocab_size} base tokens, the "
                             f"checkpoint was trained on {meta['base_vocab_size']}: wrong base model")
        from rearqa.reader.adapters import load_adapter

        model.lm = load_adapter(model.lm, path / ADAPTER_DIR, is_trainable=is_trainable)
    else:
        lm = load_causal_lm(path, dtype)
        model = cls.from_base(lm, tokenizer, config, init_new_rows=False,
                              base_model_dir=meta["base_model_dir"])
    if model.token_ids.to_dict() != meta["token_ids"]:
        raise ValueError(f"{path}: token ids {model.token_ids.to_dict()} differ from the saved "
                         f"{meta['token_ids']}")
    if meta["head_file"]:
        from safetensors.torch import load_file

        model.rank_head.load_state_dict(load_file(path / meta["head_file"]))
        model.rank_head.requires_grad_(is_trainable)
    model.check_ref_row_zero()
    return model.eval()


def compact_checkpoint(path: str | Path, dtype: torch.dtype = torch.bfloat16) -> int:
    """Store a LoRA checkpoint's float32 adapter tensors as `dtype` (bf16 halves a shipped
    checkpoint; loading casts them back to the model's dtype). The zero <RANK_REF> row stays
    exactly zero. Returns the adapter's size in bytes afterwards."""
    from safetensors.torch import load_file, save_file

    path = Path(path)
    if read_meta(path)["kind"] != "lora":
        raise ValueError(f"{path} is not a LoRA checkpoint: nothing to compact")
    size = 0
    for file in sorted((path / ADAPTER_DIR).glob("*.safetensors")):
        tensors = {name: (t.to(dtype) if t.dtype == torch.float32 else t).contiguous()
                   for name, t in load_file(file).items()}
        atomic_write(file, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
        size += file.stat().st_size
    return size
