"""`rearqa convert --recipe`: a shipped healed reader rebuilt on the CPU from its recipe.

    rearqa convert --recipe checkpoints/healed/ragft-mla96 --out readers/ragft-mla96-healed
    rearqa convert --recipe checkpoints/healed/ragft-mla96 --no-heal --out readers/ragft-mla96

The conversion the recipe describes (rearqa.reader.backbone.recipe) is rebuilt exactly as
`rearqa convert` builds it, checked against the recipe's calibration sha256 and fingerprint,
rounded to the recipe's dtype (what the adapter was trained over), and the heal adapter is merged
in float32 and the result saved in that dtype. backbone.json records the recipe and, healed, the
adapter and the sha256 of its weights. `--no-heal` writes the plain conversion: the control.
The adapter is always over the converted model (for loraprune the pruned one, sliced to the
kept heads and channels), so it is merged after the conversion, whichever the transform.

`package_healed` is the other end: on the machine that healed a conversion, it writes the
recipe directory (recipe.json, heal/, fingerprint.json, and the files the settings name:
loraprune's mask.json) from the student directory and adapter.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rearqa.app.convert_cmd import check_out, convert_model, save_reader
from rearqa.config_errors import ConfigError
from rearqa.reader.backbone.recipe import (FINGERPRINT_FILE, HEAL_WEIGHTS, MAX_HEAL_BYTES, RECIPE_FILE,
                                           Recipe, file_sha256, heal_dir, read_recipe, write_recipe)

log = logging.getLogger(__name__)


def convert_recipe(recipe_path: str | Path, out: Path, heal: bool = True, home: Path | None = None,
                   progress: bool = True, say: Callable[[str], None] = print) -> Path:
    """The reader `recipe_path` describes, rebuilt and (with `heal`) healed, written to `out`."""
    from rearqa.reader.backbone import fingerprint as fp

    say = say if progress else (lambda _: None)
    recipe = read_recipe(recipe_path)
    adapter = heal_dir(recipe) if heal and recipe.heal else None  # checked before converting
    expected = read_fingerprint(recipe) if recipe.fingerprint else None
    check_out(out)
    calib_file = recipe.path(recipe.calib_file) if recipe.calib_file else None
    say(f"rebuilding {recipe.transform} of {recipe.source} from {recipe.directory / RECIPE_FILE}")
    conversion = convert_model(recipe.transform, recipe.source_path, recipe.conversion_settings(), home,
                               progress, recipe.dtype, calib_file)
    check_calibration(recipe, conversion.calibration)
    model = conversion.model.to(getattr(torch, recipe.dtype))  # the weights the adapter was trained over
    record: dict[str, Any] = {"path": str(recipe.directory / RECIPE_FILE), **recipe.to_dict()}
    if expected is not None:
        record["fingerprint_max_rel_diff"] = check_fingerprint(expected, fp.fingerprint(model), say)
    manifest: dict[str, Any] = {"recipe": record}
    if adapter is not None:
        say(f"merging the heal adapter {adapter}")
        model = merge_heal(model, adapter).to(getattr(torch, recipe.dtype))
        manifest["heal"] = {"adapter": str(adapter), "sha256": file_sha256(adapter / HEAL_WEIGHTS)}
    elif heal:
        say("the recipe names no heal adapter: writing the plain conversion")
    return save_reader(conversion, model, out, **manifest)


def read_fingerprint(recipe: Recipe) -> dict[str, Any]:
    path = recipe.path(recipe.fingerprint)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"fingerprint {path} is not readable JSON ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("tensors"), dict):
        raise ConfigError(f"fingerprint {path}: not written by rearqa.reader.backbone.fingerprint")
    return data


def check_calibration(recipe: Recipe, record) -> None:
    """The rebuild read the calibration ids the recipe was written with (its sha256)."""
    if recipe.calib_sha256 is None:
        return
    if record is None:
        raise ConfigError(f"{recipe.directory / RECIPE_FILE}: calib_sha256 is set but "
                          f"{recipe.transform} takes no calibration; remove it")
    if record.sha256 != recipe.calib_sha256:
        raise ConfigError(f"{recipe.directory / RECIPE_FILE}: the calibration ids read ({record.source}, "
                          f"sha256 {record.sha256[:12]}) are not the recipe's ({recipe.calib_sha256[:12]}); "
                          "the corpus or its settings changed: give the recipe a calib_file")


def check_fingerprint(expected: dict, got: dict, say: Callable[[str], None]) -> float:
    """The rebuild's largest relative difference from the fingerprint the adapter was trained
    over; reported above fingerprint.WARN_REL, refused above REFUSE_REL (fingerprint.py says why)."""
    from rearqa.reader.backbone import fingerprint as fp

    verdict, result = fp.check(expected, got)
    diff, worst = result["max_rel_diff"], result["worst"]
    if verdict == "refuse":
        detail = "; ".join(result["mismatched"][:3]) or f"{diff:.3g} at {worst}"
        raise ConfigError(f"the rebuilt conversion is not the one the recipe's fingerprint records "
                          f"({detail}; refused above {fp.REFUSE_REL}): a PCA direction of another "
                          "sign, another calibration or another source; the heal adapter would not fit")
    if verdict == "warn":
        message = (f"warning: the rebuilt conversion differs from the fingerprint by {diff:.3g} "
                   f"(relative, at {worst}; bf16 rounding stays under {fp.WARN_REL})")
        log.warning(message)
        say(message)
    else:
        say(f"fingerprint matches (largest relative difference {diff:.2g})")
    return diff


def merge_heal(model: torch.nn.Module, adapter: Path) -> torch.nn.Module:
    """`model` with the heal adapter merged in float32; a ConfigError when the adapter was trained
    over another model (a shape or a module the rebuild does not have) or cannot be read."""
    from safetensors import SafetensorError

    from rearqa.reader.finetuned import merge_lora

    try:
        return merge_lora(model.float(), adapter).eval()
    except (RuntimeError, ValueError, KeyError, OSError, SafetensorError) as exc:
        first = str(exc).strip().splitlines()
        raise ConfigError(f"heal adapter {adapter} does not fit the rebuilt conversion "
                          f"({first[0] if first else type(exc).__name__}...): it was trained over "
                          "another conversion or its files are damaged") from exc


def package_healed(student_dir: str | Path, adapter: str | Path, out: str | Path, source: str | Path,
                   calib_file: str | Path | None = None, note: str = "") -> Path:
    """Write a healed reader's recipe directory `out` (recipe.json, heal/, fingerprint.json and
    the files its settings name, such as loraprune's mask.json) for the converted reader
    `student_dir` (its backbone.json) and the heal adapter trained over it; `student_dir` may
    also be the record of a conversion made elsewhere: its backbone.json and the fingerprint.json
    taken there, no weights.
    `source` ("base" or a directory) and `calib_file` are written relative to `out`, so give the
    paths they will have in the repo."""
    from rearqa.reader.backbone import fingerprint as fp
    from rearqa.reader.backbone import read_manifest
    from rearqa.reader.backbone.loading import load_causal_lm

    student_dir, adapter, out = Path(student_dir), Path(adapter), Path(out)
    manifest = read_manifest(student_dir)
    if manifest is None:
        raise ConfigError(f"{student_dir} has no backbone.json; give the converted reader the adapter healed")
    size = (adapter / HEAL_WEIGHTS).stat().st_size
    if size > MAX_HEAL_BYTES:
        raise ConfigError(f"heal adapter {adapter / HEAL_WEIGHTS}: {size / 2**20:.1f} MB, over the "
                          f"{MAX_HEAL_BYTES // 2**20} MB a shipped adapter may take; save it in bf16")
    setting_files = student_setting_files(manifest, student_dir)  # found before `out` is made
    check_out(out)
    heal = out / "heal"
    heal.mkdir(parents=True)
    for name in ("adapter_config.json", HEAL_WEIGHTS):
        shutil.copyfile(adapter / name, heal / name)
    recorded = student_dir / FINGERPRINT_FILE
    if recorded.is_file() and not (student_dir / "config.json").is_file():
        prints = json.loads(recorded.read_text())  # the machine that healed it took it (gpu_units.py probe)
    else:
        prints = fp.fingerprint(load_causal_lm(student_dir))
    (out / FINGERPRINT_FILE).write_text(json.dumps(prints, indent=1) + "\n", encoding="utf-8")
    settings, settings_sha256 = dict(manifest.settings), {}
    for name, file in setting_files.items():  # carried in the recipe, named relative to it
        settings[name] = f"{name}{file.suffix}"
        shutil.copyfile(file, out / settings[name])
        settings_sha256[name] = file_sha256(out / settings[name])
    recipe = Recipe(
        transform=manifest.transform, settings=settings, settings_sha256=settings_sha256,
        dtype=manifest.dtype,
        source="base" if str(source) == "base" else os.path.relpath(Path(source).resolve(), out.resolve()),
        calib_file=os.path.relpath(Path(calib_file).resolve(), out.resolve()) if calib_file else None,
        calib_sha256=manifest.calibration.get("sha256"), heal="heal",
        heal_sha256=file_sha256(heal / HEAL_WEIGHTS), fingerprint=FINGERPRINT_FILE, note=note,
        directory=out.resolve())
    write_recipe(out, recipe)
    return out


def student_setting_files(manifest, student_dir: Path) -> dict[str, Path]:
    """The file each file setting of the conversion named (loraprune's mask), by setting: the copy
    the export wrote beside the weights (`setting_copies`), else the path the setting records."""
    from rearqa.reader.backbone import get_transform

    transform = get_transform(manifest.transform)
    files = {}
    for name in transform.config_cls.file_settings:
        if not manifest.settings.get(name):
            continue
        copy = transform.setting_copies.get(name)
        file = student_dir / copy if copy else None
        if file is None or not file.is_file():
            file = Path(manifest.settings[name]).expanduser()
        if not file.is_file():
            kept = f" nor {student_dir / copy}" if copy else ""
            raise ConfigError(f"{student_dir}: its {manifest.transform} setting {name}="
                              f"{manifest.settings[name]!r} is not a file{kept}; the recipe must carry it")
        files[name] = file
    return files
