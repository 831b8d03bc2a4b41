"""recipe.json: a converted (and healed) reader stored as the way to rebuild it.

A conversion is deterministic given its transform, settings, source weights and calibration token
ids, so a healed reader does not ship its converted weights (hundreds of MB): it ships the recipe,
the LoRA adapter trained over the converted weights (a few MB) and the fingerprint of the
conversion it was trained over (fingerprint.py). `rearqa convert --recipe DIR --out READER`
rebuilds the conversion on the CPU, checks it against the fingerprint, merges the adapter and
writes a reader that loads by path; `--no-heal` writes the unhealed conversion, its control.

Shipped healed readers live in `checkpoints/healed/<name>/` (beside the shipped rag-ft and REAR
checkpoints): recipe.json, heal/ (adapter_config.json + adapter_model.safetensors, at most
MAX_HEAL_BYTES) and fingerprint.json. Relative paths in a recipe resolve against its own
directory, so a recipe names the shipped rag-ft adapter as "../../rag-ft-smollm2".

A setting that names a file (the transform config's `file_settings`: loraprune's mask) names it
relative to the recipe too; the file lives in the recipe directory ("mask": "mask.json") and
its sha256 is recorded in settings_sha256, so a changed mask is refused, not rebuilt into
another model that the heal adapter does not fit.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from rearqa.config_errors import ConfigError
from rearqa.files import atomic_write_text, read_json_object
from rearqa.reader.backbone.config import TRANSFORMS

RECIPE_FILE = "recipe.json"
FINGERPRINT_FILE = "fingerprint.json"
HEAL_WEIGHTS = "adapter_model.safetensors"
MAX_HEAL_BYTES = 20 * 2**20  # issue 12: a heal adapter in the repo stays under 20 MB
FORMAT = 1
DTYPES = ("bfloat16", "float32")  # what `rearqa convert` saves in
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass
class Recipe:
    """The contents of recipe.json (paths relative to `directory`, the recipe's own folder)."""

    transform: str  # the transform's name in TRANSFORMS
    settings: dict[str, Any]  # its config, as backbone.json records it (calib_passages, seed included)
    source: str  # "base" or a reader directory (an adapter such as the rag-ft one, a checkpoint)
    dtype: str = "bfloat16"  # the dtype the conversion is saved in (and the adapter was trained over)
    calib_file: str | None = None  # calibration token ids (scripts/transmla_calib.py); None: the corpus
    calib_sha256: str | None = None  # sha256 of the calibration ids the rebuild must reproduce
    # sha256 of each file a setting names (loraprune's mask), by setting; {}: none recorded
    settings_sha256: dict[str, str] = field(default_factory=dict)
    heal: str | None = None  # the heal adapter's directory (PEFT LoRA over the converted weights)
    heal_sha256: str | None = None  # sha256 of the adapter's adapter_model.safetensors
    fingerprint: str | None = None  # fingerprint.json of the conversion the adapter was trained over
    note: str = ""  # what it is and where it came from (the run, the machine, dev-select scores)
    format: int = FORMAT  # version of this file's layout
    directory: Path = field(default=Path("."), compare=False)  # where recipe.json is; not saved

    def __post_init__(self) -> None:
        where = f"{self.directory / RECIPE_FILE}"
        if self.format != FORMAT:
            raise ConfigError(f"{where}: format {self.format!r}; this rearqa reads format {FORMAT}")
        if self.transform not in TRANSFORMS:
            raise ConfigError(f"{where}: transform={self.transform!r}; choose one of {sorted(TRANSFORMS)}")
        if not isinstance(self.settings, dict):
            raise ConfigError(f"{where}: settings must be an object of the transform's settings")
        if not isinstance(self.source, str) or not self.source:
            raise ConfigError(f"{where}: source must be 'base' or a reader directory")
        if self.dtype not in DTYPES:
            raise ConfigError(f"{where}: dtype={self.dtype!r}; choose one of {list(DTYPES)}")
        hashes = {"calib_sha256": self.calib_sha256, "heal_sha256": self.heal_sha256}
        if not isinstance(self.settings_sha256, dict):
            raise ConfigError(f"{where}: settings_sha256 must be an object: setting -> sha256 of its file")
        hashes.update({f"settings_sha256.{k}": v for k, v in self.settings_sha256.items()})
        for name, value in hashes.items():
            if value is not None and not (isinstance(value, str) and _SHA256.fullmatch(value)):
                raise ConfigError(f"{where}: {name}={value!r} is not a sha256 (64 lowercase hex digits)")
        if self.heal_sha256 and not self.heal:
            raise ConfigError(f"{where}: heal_sha256 without heal (the adapter's directory)")

    def path(self, relative: str) -> Path:
        """A path the recipe names, resolved against the recipe's directory."""
        return (self.directory / Path(relative).expanduser()).resolve()

    @property
    def source_path(self) -> str | Path:
        return "base" if self.source == "base" else self.path(self.source)

    @property
    def file_settings(self) -> dict[str, str]:
        """The settings that name a file (the transform's `file_settings`), as given, when set."""
        from rearqa.reader.backbone import get_transform

        names = get_transform(self.transform).config_cls.file_settings
        return {name: self.settings[name] for name in names if self.settings.get(name)}

    def conversion_settings(self) -> dict[str, Any]:
        """The settings to convert with: each file setting resolved against the recipe's directory."""
        return {**self.settings, **{name: str(self.path(value))
                                    for name, value in self.file_settings.items()}}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["directory"]
        return data


def read_recipe(path: str | Path) -> Recipe:
    """The recipe at `path` (recipe.json or its directory), with the files it names checked to be
    there; a ConfigError naming what is missing or malformed."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / RECIPE_FILE
    if not path.is_file():
        raise ConfigError(f"--recipe {path}: no such file; give a recipe.json or the directory holding one")
    data = read_json_object(path)
    known = {f.name for f in fields(Recipe)} - {"directory"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown field(s) {unknown}; valid fields are {sorted(known)}")
    missing = sorted({"transform", "settings", "source"} - set(data))
    if missing:
        raise ConfigError(f"{path}: missing field(s) {missing}")
    recipe = Recipe(**data, directory=path.parent.resolve())
    for name in ("calib_file", "fingerprint"):
        value = getattr(recipe, name)
        if value is not None and not recipe.path(value).is_file():
            raise ConfigError(f"{path}: {name} {value!r} ({recipe.path(value)}) does not exist")
    if recipe.source != "base" and not recipe.path(recipe.source).is_dir():
        raise ConfigError(f"{path}: source {recipe.source!r} ({recipe.path(recipe.source)}) is not a directory")
    check_setting_files(recipe)
    return recipe


def check_setting_files(recipe: Recipe) -> None:
    """Each file a setting names is there and, where settings_sha256 records it, unchanged."""
    where = recipe.directory / RECIPE_FILE
    named = recipe.file_settings
    stray = sorted(set(recipe.settings_sha256) - set(named))
    if stray:
        raise ConfigError(f"{where}: settings_sha256 has {stray}, which name no file; the settings that "
                          f"name a file here are {sorted(named)}")
    for name, value in named.items():
        file = recipe.path(value)
        if not file.is_file():
            raise ConfigError(f"{where}: settings.{name} {value!r} ({file}) does not exist; the recipe "
                              "directory must hold the file (package_healed copies it there)")
        expected = recipe.settings_sha256.get(name)
        if expected and file_sha256(file) != expected:
            raise ConfigError(f"{where}: settings.{name} {file} is not the file the recipe was written "
                              f"with (its sha256 differs from settings_sha256.{name}); the rebuild would "
                              "be another model, which the heal adapter does not fit")


def write_recipe(directory: str | Path, recipe: Recipe) -> Path:
    path = Path(directory) / RECIPE_FILE
    atomic_write_text(path, json.dumps(recipe.to_dict(), indent=2) + "\n")
    return path


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def heal_dir(recipe: Recipe) -> Path:
    """The recipe's heal adapter directory, checked: the adapter's files are there, within
    MAX_HEAL_BYTES, and its weights hash to heal_sha256 (when the recipe records one)."""
    if recipe.heal is None:
        raise ConfigError(f"{recipe.directory / RECIPE_FILE} names no heal adapter; rebuild with --no-heal")
    adapter = recipe.path(recipe.heal)
    weights = adapter / HEAL_WEIGHTS
    if not (adapter / "adapter_config.json").is_file() or not weights.is_file():
        raise ConfigError(f"heal adapter {adapter}: needs adapter_config.json and {HEAL_WEIGHTS} "
                          "(what peft's save_pretrained writes)")
    size = weights.stat().st_size
    if size > MAX_HEAL_BYTES:
        raise ConfigError(f"heal adapter {weights}: {size / 2**20:.1f} MB, over the "
                          f"{MAX_HEAL_BYTES // 2**20} MB a shipped adapter may take; save it in bf16 "
                          "or with a lower rank")
    if recipe.heal_sha256 and file_sha256(weights) != recipe.heal_sha256:
        raise ConfigError(f"heal adapter {weights}: its sha256 is not the recipe's heal_sha256; the "
                          "file was changed or is not the adapter the recipe was written for")
    return adapter
