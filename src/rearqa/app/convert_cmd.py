"""`rearqa convert`: a backbone transform applied to a reader, saved as a reader that loads by path.

    rearqa convert --transform transmla --from base --kv-lora-rank 96 --rope-dim 64 --out readers/mla96
    rearqa convert --transform transmla --from checkpoints/rear-smollm2 --kv-lora-rank 128 --rope-dim 32 --out readers/rear-mla
    rearqa convert --transform xecomla --from base --energy 0.99 --rope-dim 32 --out readers/xeco99
    rearqa convert --transform loraprune --from base --mask runs/lp/mask.json --out readers/pruned
    rearqa convert --transform masa --from checkpoints/rag-ft-smollm2 --atoms 10 --out readers/ragft-masa10

`--from` is `base` (the bundled reader), a transformers checkpoint directory, a PEFT adapter
(rag-ft / closed-book-ft: merged into its base first) or a REAR checkpoint (its LoRA merged first;
the REAR token rows, rank head and routing are kept, and the output is a REAR checkpoint whose
backbone is the converted one). Calibration text is drawn from the corpus the retriever serves,
never from the QA sets. The output directory holds the weights, `backbone.json` (the transform,
its settings, the calibration, the source) and the tokenizer; `--reader DIR` (or reader.model,
reader.checkpoint for REAR) loads it everywhere. `rearqa convert --recipe DIR` rebuilds a shipped
healed reader from its recipe (rearqa.app.recipe_cmd) with `convert_model` and `save_reader`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from rearqa.config_errors import ConfigError
from rearqa.reader.backbone.loading import source_kind

log = logging.getLogger(__name__)


def transform_config(transform, options: dict[str, Any]):
    """The transform's typed config from the options given (None = not given); an option the
    transform does not take is refused, naming the ones it does."""
    known = {f.name for f in fields(transform.config_cls)}
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - known)
    if unknown:
        flags = ", ".join("--" + k.replace("_", "-") for k in unknown)
        raise ConfigError(f"transform {transform.name!r} does not take {flags}; its settings are "
                          f"{sorted(known)}")
    return transform.config_cls(**given)


def load_source(source: str | Path, home: Path) -> tuple[torch.nn.Module, Any, Any, dict]:
    """(causal LM in float32 with any adapter merged, tokenizer, the REAR model or None, a record
    of the source for backbone.json)."""
    from transformers import AutoTokenizer

    from rearqa import assets
    from rearqa.reader.backbone.loading import load_causal_lm

    kind = source_kind(source)
    base_dir = assets.reader_model_dir(home)
    if kind == "rear":
        from rearqa.reader.rear.model import RearModel

        rear = RearModel.from_pretrained(source, base_model_dir=base_dir, dtype=torch.float32)
        rear.export_linear_head()
        lm = rear.lm.merge_and_unload() if rear.is_lora else rear.causal_lm
        return lm.eval(), rear.tokenizer, rear, {"kind": "rear", "path": str(source)}
    if kind == "adapter":
        from rearqa.reader.finetuned import merge_lora

        lm = merge_lora(load_causal_lm(base_dir, torch.float32), source)
        # The adapter's own tokenizer when it saved one: its eos is what the answers end with.
        tokenizer_dir = source if (Path(source) / "tokenizer_config.json").is_file() else base_dir
        return (lm.eval(), AutoTokenizer.from_pretrained(tokenizer_dir), None,
                {"kind": "adapter", "path": str(source), "base": str(base_dir)})
    model_dir = base_dir if kind == "base" else Path(source)
    return (load_causal_lm(model_dir, torch.float32).eval(), AutoTokenizer.from_pretrained(model_dir),
            None, {"kind": kind, "path": str(model_dir)})


SAVE_DTYPES = ("bfloat16", "float32")


def convert_reader(transform_name: str, source: str | Path, out: Path, options: dict[str, Any],
                   home: Path | None = None, progress: bool = True, dtype: str = "bfloat16",
                   calib_file: Path | None = None) -> Path:
    """Convert the reader `source` with the transform (in float32, its PCAs in float64) and write
    it to `out` in `dtype`; returns `out`."""
    check_out(out)
    conversion = convert_model(transform_name, source, options, home, progress, dtype, calib_file)
    return save_reader(conversion, conversion.model.to(getattr(torch, dtype)), out)


@dataclass
class Conversion:
    """A converted reader in memory, before it is written."""

    transform: Any  # the BackboneTransform
    cfg: Any  # its typed config, as resolved by the conversion
    model: torch.nn.Module  # the converted causal LM, float32
    tokenizer: Any
    rear: Any  # the REAR model the source was, or None
    source: dict  # the source's record for backbone.json
    calibration: Any  # the CalibrationRecord, or None for a weight-only transform


def check_out(out: Path) -> None:
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out} is not empty; choose a new directory")


def convert_model(transform_name: str, source: str | Path, options: dict[str, Any],
                  home: Path | None = None, progress: bool = True, dtype: str = "bfloat16",
                  calib_file: Path | None = None) -> Conversion:
    """The reader `source` converted in memory (float32; `dtype` is only checked here)."""
    if dtype not in SAVE_DTYPES:
        raise ConfigError(f"--dtype {dtype!r}: choose one of {list(SAVE_DTYPES)}")
    from rearqa.reader.backbone import get_transform

    transform = get_transform(transform_name)
    cfg = transform_config(transform, options)
    home = _home_for(home, calib_file is not None or not hasattr(cfg, "calib_passages"), progress)
    lm, tokenizer, rear, source_record = load_source(source, home)
    cfg_check = getattr(cfg, "check_model", None)
    if cfg_check is not None:
        cfg_check(lm.config)  # a bad rank or rope width fails before calibration is read
    calib, record = calibration_for(cfg, tokenizer, home, calib_file)
    extra = {"record": record} if record is not None else {}
    converted = transform.apply(lm, calib, cfg, progress=progress, **extra)
    return Conversion(transform, cfg, converted, tokenizer, rear, source_record, record)


def save_reader(conversion: Conversion, model: torch.nn.Module, out: Path, **manifest: Any) -> Path:
    """`model` (the conversion's, cast to the dtype to save, a heal adapter perhaps merged) written
    to `out` as a reader that loads by path; `manifest` adds backbone.json fields (heal, recipe)."""
    out = Path(out)
    record = conversion.calibration
    conversion.transform.export(model, out, conversion.cfg, source=conversion.source,
                                calibration=record.to_dict() if record is not None else {}, **manifest)
    conversion.tokenizer.save_pretrained(out)
    if conversion.rear is not None:
        from rearqa.reader.rear.checkpoint import write_rear_files

        write_rear_files(conversion.rear, model, out)
    return out


def _home_for(home: Path | None, reader_only: bool, progress: bool) -> Path:
    """The rearqa home to read the base reader from. With the calibration carried in a file or
    none needed (a weight-only transform: `reader_only`), a home holding only the prepared reader
    will do (the GPU machine has no corpus); else the home is prepared in full (the corpus is
    where calibration text comes from)."""
    from rearqa import assets

    if reader_only:
        h = assets.home_or_default(home)
        if (assets.reader_model_dir(h) / "config.json").is_file():
            return h
    return assets.ensure_prepared(home, progress=progress)


def calibration_for(cfg, tokenizer, home: Path, calib_file: Path | None = None) -> tuple[Any, Any]:
    """(calibration token batches, their record) drawn from the corpus the retriever serves
    (never the QA sets), or read from `calib_file` (written by scripts/transmla_calib.py, checked
    against its sha256), for transforms whose settings ask for calibration; (None, None) else."""
    if not hasattr(cfg, "calib_passages"):
        if calib_file is not None:
            raise ConfigError("--calib-file: this transform takes no calibration text")
        return None, None
    from rearqa.asset_paths import corpus_file
    from rearqa.reader.backbone.transmla.calibration import corpus_calibration, load_calibration

    if calib_file is not None:
        try:
            return load_calibration(calib_file)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc

    calib, _, record = corpus_calibration(tokenizer, corpus_file(home), cfg.calib_passages,
                                          cfg.calib_tokens, cfg.seed)
    return calib, record
