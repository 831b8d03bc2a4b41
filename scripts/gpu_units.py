#!/usr/bin/env python3
"""Helpers of scripts/gpu_unit.sh (and, for `oom-failures`, scripts/gpu_kernels.sh) on the GPU
machine (python3 there; stdlib, plus torch, safetensors and yaml for `compact-adapter` and
`config` only).

    gpu_units.py config BASE.yaml OUT.yaml KEY=VALUE...   a training config with keys overridden
    gpu_units.py chosen SELECTION.json METHOD FIELD        a field of the dev-select choice
    gpu_units.py compact-adapter DIR                       float32 -> bf16 in DIR's *.safetensors
    gpu_units.py record UNITS.json ID STATUS [KEY=VALUE...] a unit's line in the machine's record
    gpu_units.py note FILE.json KEY=VALUE...               set keys of a flat JSON file (unit.json)
    gpu_units.py get FILE.json KEY [DEFAULT]               print one key of a flat JSON file
    gpu_units.py done UNITS.json                           the ids of the units marked done
    gpu_units.py pack ID UNIT_DIR OUT_DIR                  UNIT_DIR -> OUT_DIR/ID.tgz (<= 15 MiB)
    gpu_units.py convert FROM OUT SETTING CALIB.json        `rearqa convert`: SETTING RANK+ROPE
                                                           (transmla, carried calibration ids),
                                                           xRANK+ROPE (xecomla) or kvN (kv_merge,
                                                           carried calibration ids)
    gpu_units.py prune FROM OUT MASK.json                  `rearqa convert --transform loraprune`
    gpu_units.py merge-heal STUDENT ADAPTER OUT            the heal LoRA merged, saved bf16
    gpu_units.py probe MODEL CALIB.json OUT.json           fingerprint + top logits (CPU rebuild check)
    gpu_units.py pooled OUT.json REPORT_DIR...             EM/F1 over rear_eval reports' rows
    gpu_units.py best SCORE.json...                        the best trainable's name (EM, then F1)
    gpu_units.py best-kl KL.json UNHEALED TRAINABLE...     the trainable of lowest dev-select KL
    gpu_units.py extract-lora STUDENT HEALED OUT RANK      a full-weight heal as a rank-RANK LoRA
    gpu_units.py oom-failures FAILURE_LOG                  the tests of a REARQA_FAILURE_LOG that ran
                                                           the GPU out of memory, one a line; exit 1
                                                           when another failure is there or none is

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


def convert(source: str, out: str, setting: str, calib: str) -> None:
    """The conversion `rearqa convert` runs, without its command-line layer (the GPU machine's
    image has no typer); the reader comes from $REARQA_HOME. SETTING: RANK+ROPE (TransMLA, with
    the carried calibration ids), xRANK+ROPE (X-EcoMLA, from the weights alone) or kvN (KV-head
    merging to N heads, with the carried calibration ids)."""
    from rearqa.app.convert_cmd import convert_reader

    transform, options = parse_setting(setting)
    convert_reader(transform, source, Path(out), options, progress=False,
                   calib_file=Path(calib) if transform in CALIBRATED else None)
    print(f"converted {source} -> {out} ({transform} {options})")


CALIBRATED = ("transmla", "kv_merge")  # transforms fitted to the carried calibration ids


def parse_setting(setting: str) -> tuple[str, dict[str, int]]:
    """"96+64" -> ("transmla", {kv_lora_rank 96, rope_dim 64}); "x128+32" -> ("xecomla", ...);
    "kv1" -> ("kv_merge", {"kv_heads": 1})."""
    if setting.startswith("kv") and setting[2:].isdigit():
        return "kv_merge", {"kv_heads": int(setting[2:])}
    transform = "xecomla" if setting.startswith("x") else "transmla"
    rank, sep, rope = setting.lstrip("x").partition("+")
    if not (sep and rank.isdigit() and rope.isdigit()):
        sys.exit(f"setting {setting!r} is not RANK+ROPE (TransMLA, 96+64), xRANK+ROPE (X-EcoMLA) "
                 "or kvN (KV-head merging)")
    return transform, {"kv_lora_rank": int(rank), "rope_dim": int(rope)}


def prune(source: str, out: str, mask: str) -> None:
    """`rearqa convert --transform loraprune --mask MASK` of SOURCE (LoRAPrune's servable reader)."""
    from rearqa.app.convert_cmd import convert_reader

    convert_reader("loraprune", source, Path(out), {"mask": mask}, progress=False)
    print(f"pruned {source} -> {out} (mask {mask})")


def merge_heal(student: str, adapter: str, out: str) -> None:
    """STUDENT (a converted reader dir) with the heal LoRA in ADAPTER merged in fp32
    (rearqa.app.recipe_cmd.merge_heal, as `rearqa convert --recipe` merges it), saved in bf16 as
    a reader dir that loads by path; its backbone.json names the heal as a rebuild's does."""
    import shutil
    from dataclasses import replace

    import torch

    from rearqa.app.recipe_cmd import merge_heal as merged
    from rearqa.reader.backbone.loading import load_causal_lm
    from rearqa.reader.backbone.manifest import read_manifest, write_manifest
    from rearqa.reader.backbone.recipe import HEAL_WEIGHTS, file_sha256

    model = merged(load_causal_lm(Path(student), torch.float32), Path(adapter)).to(torch.bfloat16)
    out_p = Path(out)
    shutil.copytree(student, out_p, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.index.json"))
    model.save_pretrained(out_p)
    heal = {"adapter": str(adapter), "sha256": file_sha256(Path(adapter) / HEAL_WEIGHTS)}
    write_manifest(out_p, replace(read_manifest(out_p), heal=heal))
    print(f"merged {adapter} into {student} -> {out}")


def probe(model_dir: str, calib: str, out: str) -> None:
    """What a CPU rebuild of MODEL_DIR is checked against: its fingerprint (rearqa.reader.
    backbone.fingerprint, in the dtype saved) -> OUT, and the top-20 next-token logits at the last
    4 positions of the first 2 calibration samples (128 tokens each) -> OUT with .logits.json."""
    import torch

    from rearqa.reader.backbone.fingerprint import fingerprint
    from rearqa.reader.backbone.loading import load_causal_lm

    model = load_causal_lm(Path(model_dir), torch.bfloat16).eval()
    Path(out).write_text(json.dumps(fingerprint(model)) + "\n")
    ids = torch.tensor([row[:128] for row in json.loads(Path(calib).read_text())["tokens"][:2]])
    with torch.no_grad():
        logits = model.float()(input_ids=ids).logits[:, -4:]
    top = logits.topk(20, dim=-1)
    Path(out).with_suffix(".logits.json").write_text(json.dumps(
        {"model": model_dir, "top_ids": top.indices.tolist(), "top_logits": top.values.tolist()}) + "\n")
    print(f"probe: {out}")


# What a full-weight heal may have moved: the MLA projections (TransMLA / X-EcoMLA `new`) and a
# Llama's attention (a KV-merged reader's `attention`).
EXTRACT_MODULES = ("q_proj", "kv_a_proj_with_mqa", "kv_b_proj", "k_proj", "v_proj", "o_proj")


def extract_lora(student: str, healed: str, out: str, rank: str) -> None:
    """The shippable form of a full-weight heal (distill_trainable new / attention): per layer and
    module the heal moved (of EXTRACT_MODULES), the heal's update W_healed - W_student truncated
    to `rank` by SVD (B = U_r S_r, A = V_r^T, alpha = r: scale 1), saved as a PEFT LoRA adapter
    over STUDENT (bf16) with extract.json: each update's kept share of its Frobenius norm.
    Refused when the heal changed anything else (an update a LoRA over these modules cannot carry)."""
    import torch

    from rearqa.reader.adapters import wrap
    from rearqa.reader.adapters.lora.config import LoraSettings
    from rearqa.reader.backbone.loading import load_causal_lm

    r = int(rank)
    base = load_causal_lm(Path(student), torch.float32)
    tuned = dict(load_causal_lm(Path(healed), torch.float32).named_parameters())
    moved = [n for n, p in base.named_parameters() if not torch.equal(p, tuned[n])]
    other = [n for n in moved if not n.endswith(".weight") or n.rsplit(".", 2)[-2] not in EXTRACT_MODULES]
    if other:
        sys.exit(f"extract-lora: the heal changed {other[:4]}... too, which a LoRA over "
                 f"{EXTRACT_MODULES} cannot carry")
    modules = sorted({n.rsplit(".", 2)[-2] for n in moved})
    if not modules:
        sys.exit(f"extract-lora: {healed} has the weights of {student}: nothing was healed")
    peft_model = wrap("lora", base, LoraSettings(r=r, alpha=r, dropout=0.0, target=modules))
    kept = {}
    with torch.no_grad():
        for name, module in peft_model.named_modules():
            if not hasattr(module, "lora_A") or "default" not in module.lora_A:
                continue
            key = name.removeprefix("base_model.model.") + ".weight"
            delta = (tuned[key] - module.base_layer.weight).double()
            u, sv, vh = torch.linalg.svd(delta, full_matrices=False)
            k = min(r, sv.numel())
            b = torch.zeros(delta.shape[0], r, dtype=torch.float64)
            a = torch.zeros(r, delta.shape[1], dtype=torch.float64)
            b[:, :k], a[:k] = u[:, :k] * sv[:k], vh[:k]
            module.lora_B["default"].weight.copy_(b.float())
            module.lora_A["default"].weight.copy_(a.float())
            total = sv.pow(2).sum().item()
            kept[key] = (sv[:k].pow(2).sum().item() / total) ** 0.5 if total else 1.0
    peft_model.save_pretrained(out)
    compact_adapter(out)
    values = list(kept.values())
    Path(out, "extract.json").write_text(json.dumps(
        {"student": student, "healed": healed, "rank": r, "modules": modules,
         "kept_norm_min": min(values), "kept_norm_mean": sum(values) / len(values),
         "kept_norm": kept}, indent=2) + "\n")
    print(f"extract-lora: rank {r}, update norm kept min {min(values):.4f} mean "
          f"{sum(values) / len(values):.4f} -> {out}")


def pooled(out: str, *report_dirs: str) -> None:
    """EM and F1 over the rows of rear_eval reports (each a dir with rows.jsonl) -> OUT json."""
    rows = []
    for d in report_dirs:
        for f in Path(d).rglob("rows.jsonl"):
            rows += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    if not rows:
        sys.exit(f"pooled: no rows.jsonl under {report_dirs}")
    score = {"n": len(rows), "em": sum(r["em"] for r in rows) / len(rows),
             "f1": sum(r["f1"] for r in rows) / len(rows),
             "empty": sum(not str(r.get("prediction", r.get("answer", ""))).strip() for r in rows) / len(rows)}
    Path(out).write_text(json.dumps(score, indent=2) + "\n")
    print(f"pooled: {score}")


def best_kl(kl_file: str, unhealed: str, *trainables: str) -> None:
    """The trainable whose student has the lowest mean KL in distill_kl.py's KL_FILE (students
    listed as the unhealed conversion, then one per trainable in order)."""
    students = list(json.loads(Path(kl_file).read_text())["students"].items())
    if len(students) != len(trainables) + 1 or students[0][0] != unhealed:
        sys.exit(f"best-kl: {kl_file} has {len(students)} students, expected the unhealed one "
                 f"and {len(trainables)} trainables")
    kls = {t: s["mean_kl"] for t, (_, s) in zip(trainables, students[1:])}
    print(min(kls, key=kls.get))


def best(*score_files: str) -> None:
    """The trainable whose score file (UNIT/<trainable>/select/score.json) has the best EM, then F1."""
    scored = [(json.loads(Path(f).read_text()), Path(f).parent.parent.name) for f in score_files]
    score, name = max(scored, key=lambda s: (s[0]["em"], s[0]["f1"]))
    print(name)


OOM_MARKS = ("out of memory", "OutOfMemoryError", "cudaErrorMemoryAllocation")


def logged_failures(text: str) -> dict[str, str]:
    """{node id: its tracebacks} of a REARQA_FAILURE_LOG (tests/conftest.py): blocks that open with
    `FAILED <node id> (<phase>)`; a test failing in two phases keeps both tracebacks."""
    failures: dict[str, str] = {}
    node = None
    for line in text.splitlines(keepends=True):
        if line.startswith("FAILED ") and line.rstrip().endswith(")") and " (" in line:
            node = line[len("FAILED "):].rstrip().rsplit(" (", 1)[0]
            failures.setdefault(node, "")
        elif node is not None:
            failures[node] += line
    return failures


def oom_failures(failure_log: str) -> None:
    """Print the node ids of the tests that failed by running the GPU out of memory, one a line,
    for gpu_kernels.sh to run again one at a time: pytest-xdist's workers share one card, and
    session 27's 16 on an 80 GiB H100 failed 12 tests that way, each a victim of the others' memory
    as much as of its own. Exit 1, printing nothing, when any failure is of another kind (running
    again alone would not clear it) or the log holds none."""
    failures = logged_failures(Path(failure_log).read_text(encoding="utf-8"))
    other = [node for node, text in failures.items() if not any(m in text for m in OOM_MARKS)]
    if not failures or other:
        sys.exit(1)
    print("\n".join(failures))


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit(__doc__)
    cmd, args = argv[0], argv[1:]
    table = {"config": config, "chosen": chosen, "compact-adapter": compact_adapter,
             "record": record, "pack": pack, "note": note, "get": get, "done": done,
             "convert": convert, "prune": prune, "merge-heal": merge_heal, "probe": probe, "pooled": pooled,
             "best": best, "best-kl": best_kl, "extract-lora": extract_lora, "oom-failures": oom_failures}
    if cmd not in table:
        sys.exit(f"unknown command {cmd!r}; one of {sorted(table)}")
    table[cmd](*args)


if __name__ == "__main__":
    main(sys.argv[1:])
