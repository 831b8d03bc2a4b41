#!/usr/bin/env python3
"""Helpers of scripts/gpu_unit.sh on the GPU machine (python3 there; stdlib, plus torch,
safetensors and yaml for `compact-adapter` and `config` only).

    gpu_units.py config BASE.yaml OUT.yaml KEY=VALUE...   a training config with keys overridden
    gpu_units.py chosen SELECTION.json METHOD FIELD        a field of the dev-select choice
    gpu_units.py compact-adapter DIR                       float32 -> bf16 in DIR's *.safetensors
    gpu_units.py record UNITS.json ID STATUS [KEY=VALUE...] a unit's line in the machine's record
    gpu_units.py note FILE.json KEY=VALUE...               set keys of a flat JSON file (unit.json)
    gpu_units.py get FILE.json KEY [DEFAULT]               print one key of a flat JSON file
    gpu_units.py done UNITS.json                           the ids of the units marked done
    gpu_units.py pack ID UNIT_DIR OUT_DIR                  UNIT_DIR -> OUT_DIR/ID.tgz (<= 15 MiB)
    gpu_units.py convert FROM OUT RANK ROPE CALIB.json      `rearqa convert --transform transmla`
                                                           with carried calibration ids (rearqa)

Packing keeps logs, JSON/JSONL, reports, plots and the unit's chosen/ checkpoint (bf16 adapter,
tokenizer, configs); it leaves out training checkpoints (resumable state: optimiser moments),
every other weight file, and the files of the unit's `skip` list. When the archive is larger
than the limit it is written again without rows.jsonl files (per-question rows), and refused
(no archive, exit 5) if it is still too large.
"""
from __future__ import annotations

import io
import json
import os
import sys
import tarfile
import time
from pathlib import Path

MIB = 1 << 20
PACK_LIMIT = int(float(os.environ.get("PACK_LIMIT_MIB", "15")) * MIB)
KEEP_SUFFIXES = (".log", ".json", ".jsonl", ".md", ".png", ".csv", ".txt", ".yaml", ".tsv")
WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".npy")


def _value(text: str):
    """A --set value: JSON first (so 1e-4 is a number, which YAML 1.1 reads as a string), then
    YAML (true, [a, b], ...), else the text itself."""
    import yaml

    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def config(base: str, out: str, *pairs: str) -> None:
    import yaml

    data = yaml.safe_load(Path(base).read_text()) or {}
    target = data["train"] if set(data) == {"train"} and isinstance(data["train"], dict) else data
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            sys.exit(f"--set {pair!r}: give KEY=VALUE")
        target[key] = _value(value)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(yaml.safe_dump(data, sort_keys=False))
    print(f"config {out}: {base} with {' '.join(pairs)}")


def chosen(selection: str, method: str, field: str) -> None:
    print(json.loads(Path(selection).read_text())[method]["chosen"][field])


def compact_adapter(directory: str) -> None:
    """A baseline's PEFT adapter in bf16 (rearqa's compact_checkpoint does REAR checkpoints)."""
    import torch
    from safetensors.torch import load_file, save_file

    size = 0
    for file in sorted(Path(directory).rglob("*.safetensors")):
        tensors = {k: (t.to(torch.bfloat16) if t.dtype == torch.float32 else t).contiguous()
                   for k, t in load_file(file).items()}
        tmp = file.with_name(file.name + ".tmp")
        save_file(tensors, str(tmp), metadata={"format": "pt"})
        os.replace(tmp, file)
        size += file.stat().st_size
    print(size)


def record(units_file: str, unit_id: str, status: str, *pairs: str) -> None:
    path = Path(units_file)
    data = json.loads(path.read_text()) if path.is_file() else {"units": {}}
    row = data["units"].get(unit_id, {})
    row.update(status=status, at=time.strftime("%Y-%m-%dT%H:%M:%S"))
    for pair in pairs:
        key, _, value = pair.partition("=")
        row[key] = _parse(value)
    data["units"][unit_id] = row
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def _parse(value: str):
    try:
        return json.loads(value)
    except ValueError:
        return value


def note(file: str, *pairs: str) -> None:
    path = Path(file)
    data = json.loads(path.read_text()) if path.is_file() else {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        data[key] = _parse(value)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def get(file: str, key: str, default: str | None = None) -> None:
    data = json.loads(Path(file).read_text())
    if key not in data and default is None:
        sys.exit(f"{file} has no {key!r}")
    value = data.get(key, default)
    print(value if isinstance(value, str) else json.dumps(value))


def done(units_file: str) -> None:
    path = Path(units_file)
    units = json.loads(path.read_text())["units"] if path.is_file() else {}
    print(",".join(k for k, v in units.items() if v.get("status") == "done"))


def _members(unit_dir: Path, rows: bool) -> list[Path]:
    skip = set()
    unit_json = unit_dir / "unit.json"
    if unit_json.is_file():
        skip = set(json.loads(unit_json.read_text()).get("pack_skip", []))
    out = []
    for p in sorted(unit_dir.rglob("*")):
        if not p.is_file() or p.is_symlink():
            continue
        rel = p.relative_to(unit_dir)
        parts = rel.parts
        if str(rel) in skip or any(str(Path(*parts[:i])) in skip for i in range(1, len(parts))):
            continue
        if parts[0] == "chosen":
            out.append(p)
            continue
        if "checkpoints" in parts or p.name.endswith(WEIGHTS) or not p.name.endswith(KEEP_SUFFIXES):
            continue
        if parts[0] == "train" and len(parts) > 1 and parts[1] == "final":
            continue  # its bf16 copy is chosen/ (when it was chosen)
        if not rows and p.name == "rows.jsonl":
            continue
        out.append(p)
    return out


def pack(unit_id: str, unit_dir: str, out_dir: str) -> None:
    unit_dir_p, out = Path(unit_dir), Path(out_dir) / f"{unit_id}.tgz"
    tmp = out.with_name(out.name + ".tmp")
    dropped = None
    for rows in (True, False):
        with tarfile.open(tmp, "w:gz") as tar:
            for p in _members(unit_dir_p, rows):
                tar.add(p, arcname=f"{unit_id}/{p.relative_to(unit_dir_p)}", recursive=False)
            if not rows:
                note = b"rows.jsonl files were left out: the archive was over the limit with them\n"
                info = tarfile.TarInfo(f"{unit_id}/PACK_NOTE.txt")
                info.size, info.mtime = len(note), int(time.time())
                tar.addfile(info, io.BytesIO(note))
        size = tmp.stat().st_size
        if size <= PACK_LIMIT:
            break
        dropped = size
    else:
        tmp.unlink()
        print(f"pack: REFUSED {unit_id}: {size / MIB:.1f} MiB even without rows.jsonl, over the "
              f"{PACK_LIMIT / MIB:g} MiB limit of one returned file", file=sys.stderr)
        sys.exit(5)
    os.replace(tmp, out)
    if dropped:
        print(f"pack: {unit_id}: {dropped / MIB:.1f} MiB with rows.jsonl; left them out",
              file=sys.stderr)
    print(f"{out} {out.stat().st_size}")


def convert(source: str, out: str, rank: str, rope: str, calib: str) -> None:
    """The TransMLA conversion `rearqa convert` runs, without its command-line layer (the GPU
    machine's image has no typer); the reader comes from $REARQA_HOME."""
    from rearqa.app.convert_cmd import convert_reader

    convert_reader("transmla", source, Path(out), {"kv_lora_rank": int(rank), "rope_dim": int(rope)},
                   progress=False, calib_file=Path(calib))
    print(f"converted {source} -> {out} ({rank}+{rope})")


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit(__doc__)
    cmd, args = argv[0], argv[1:]
    table = {"config": config, "chosen": chosen, "compact-adapter": compact_adapter,
             "record": record, "pack": pack, "note": note, "get": get, "done": done,
             "convert": convert}
    if cmd not in table:
        sys.exit(f"unknown command {cmd!r}; one of {sorted(table)}")
    table[cmd](*args)


if __name__ == "__main__":
    main(sys.argv[1:])
