#!/usr/bin/env python3
"""The device calls of a GPU plan, in order, with their carry lists, commands and minutes.

    python scripts/gpu_plan.py bench    [--bench-args "..."]
    python scripts/gpu_plan.py recipe   --rear A="--seed 0" --rear B="--set lr=1e-4" [--bench-args ...]
    python scripts/gpu_plan.py protocol [--budget TOKENS] [--seeds 0 1 2]
        options: --runs DIR   skip the units whose archives are already in DIR (resume)
                 --staged     the machine is warm and its STATUS said env=ready: no staging calls
                 --json       machine-readable (scripts/gpu_rehearse.sh reads it)
                 --rehearse   CPU-sized units (the rehearsal's settings below)
    python scripts/gpu_plan.py collect FILES_AT RUNS_DIR
        after each call: copies the returned archives into RUNS_DIR, merges units.json, and puts
        the training units' archives into .gpu/in/ for the eval-test calls that carry them
    python scripts/gpu_plan.py record RUNS_DIR
        the done archives' results (no weights) into docs/results/protocol/ID/, to commit: a unit
        recorded there counts as done for later plans, on any machine

Each call is one `run` of the device tool (timeout_s 600), made as soon as the previous one
returns (a machine idle for 30 s is given back, and everything on it is lost). Every call runs
`bash scripts/gpu_unit.sh UNIT ...` (see its header), which first keeps whatever part it carries
and prints a STATUS line. When a call's reply shows a new `machine=` id or `env=not-ready`, the
machine was lost: run this again with --runs DIR (it re-stages, then continues with the first
unit not done). The plan carries the last core part with the first unit and the test part with
the first test unit, so no call is spent on staging alone that need not be.

Minutes are estimates from constants (EST below; documented where they come from), not
measurements of this plan; a session has 30 device minutes (a developer's), a call 10.
"""
from __future__ import annotations

import argparse
import gzip
import json
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

MIB = 1 << 20
SESSION_MIN = 30.0
CALL_S = 600  # timeout_s of every call (the tool's most)
UNIT_BUDGET_S = 540  # gpu_unit.sh --budget default
CALL_CAP_MIB = 58  # what one call may carry in this plan, tree included (the tool's limit: 64)

# Estimates, minutes (constants; where each comes from):
EST = {
    "start": 2.0,        # a bare machine's start (device README: "a minute or more"; runs 1-2)
    "call": 0.25,        # a call's own overhead: reply, next call, $OUT back (< 30 s between calls)
    "per_mib": 0.006,    # sending the tree and carry, per MiB (guess: ~3 MiB/s)
    "env": 0.8,          # reassembly + wheels + GGUF -> fp32 checkpoint (42 s on this 2-core CPU)
    "bench": 5.0,        # scripts/bench_train.py: unknown until it exists; --bench-min sets it
    "rear_s_per_step": 0.48,  # REAR step of gpu-fast.yaml on the H200 (session 5, unit A: 300 in 142 s)
    "rear_fixed": 2.4,   # the rest of unit A's 285 s: load, tokenise, dev-select 2 x 500 at k=20, pack
    "rag-ft": 5.0,       # 243 steps x 0.67 s (benchmark, 128 examples) + dev-select 3 k x 1,000 + pack
    "closed-book-ft": 6.0,  # ~1,500 steps of 128 short examples (a guess: ~0.2 s/step) + select
    "test-rear": 4.5,    # 7,610 test questions at 0.05 s (run 1, k=20), three sets side by side
    "test-baseline": 3.0,  # the same for rag-ft / closed-book-ft (run 1: ~0.03 s/question)
    "untuned": 3.5,      # closed-book + rag k=5 on the three test sets
}
# Committed results of the protocol's units (`record`): what outlives the session's machine.
RECORDS = Path(__file__).resolve().parent.parent / "docs" / "results" / "protocol"


def parked(records: Path) -> Path:
    """Where scripts/gpu_park.py keeps `records` (<repo>/docs/results/protocol) during a loan."""
    sys.path.insert(0, str(Path(__file__).parent))
    from gpu_park import PARKED

    root = records.parents[2]
    return root / PARKED / records.relative_to(root)
REAR_STEPS = 250 + 50  # configs/train/gpu.yaml: steps + warmup_stage_steps
RUN2_BUDGET = 5731630  # `train rear -c configs/train/gpu.yaml --count-tokens 0` (run 2's count)
# The protocol's frozen recipe (chosen on dev-select in session 5: unit A against run 2 and D) and
# its token budget: what unit A (seed 0) logged, the same for every baseline and seed.
FROZEN = "configs/train/gpu-fast.yaml"
FROZEN_BUDGET = 11503924
REAR_STEPS_FAST = 270 + 30  # gpu-fast.yaml: steps + warmup_stage_steps

# --rehearse: the same calls, CPU-sized (scripts/gpu_rehearse.sh); the tiny base model travels.
REHEARSE_ENV = {"SEL_LIMIT": "2", "SEL_ARGS": "--batch-size 2 --max-new-tokens 4",
                "TESTS": "nq-test:2 tqa-test:2 squad-test:2", "TEST_PARALLEL": "0",
                "EVAL_ARGS": "--batch-size 2 --max-new-tokens 4 --resamples 20",
                "BASE_MODEL": ".gpu/tiny-base", "SELECT_RESERVE": "60"}
REHEARSE_TRAIN = "--device cpu --threads 2 --max-questions 8 --batch 1 --grad-accum 1"
REHEARSE_REAR = "--steps 2 --warmup-steps 1 --save-every 2"
REHEARSE_BUDGET = 3000
REHEARSE_CARRY = [".gpu/tiny-base"]


def repo_root() -> Path:
    return Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], check=True,
                               capture_output=True, text=True).stdout.strip())


def tree_mib(root: Path) -> float:
    sys.path.insert(0, str(Path(__file__).parent))
    from gpu_stage import travelling_tree_bytes

    return travelling_tree_bytes(root) / MIB


def read_parts(root: Path) -> tuple[list[dict], str | None]:
    """The staged parts in .gpu/ (name, group, MiB); a default layout when none is built yet."""
    parts, stage = [], None
    for d in sorted((root / ".gpu").glob("p*"), key=lambda p: int(p.name[1:]) if p.name[1:].isdigit() else 0):
        m = d / "MANIFEST"
        if not (d.is_dir() and d.name[1:].isdigit() and m.is_file()):
            continue
        group = "core"
        for line in m.read_text().splitlines():
            if line.startswith("part "):
                group = line.split()[4]
            elif line.startswith("stage "):
                stage = line.split()[1]
        size = sum(f.stat().st_size for f in d.iterdir() if f.is_file()) / MIB
        parts.append({"name": d.name, "group": group, "mib": size})
    if not parts:  # not built yet: the layout gpu_stage.py builds from today's files
        parts = [{"name": "p1", "group": "core", "mib": 34.9}, {"name": "p2", "group": "core", "mib": 34.9},
                 {"name": "p3", "group": "core", "mib": 34.9}, {"name": "p4", "group": "test", "mib": 10.6}]
    return parts, stage


def archive_status(path: Path) -> str | None:
    """The status in an archive's ID/unit.json, None when unreadable."""
    unit_id = path.name[: -len(".tgz")]
    try:
        with tarfile.open(path) as tar:
            f = tar.extractfile(f"{unit_id}/unit.json")
            return json.load(f).get("status") if f else None
    except (tarfile.TarError, KeyError, OSError, ValueError):
        return None


def unit_done(runs: Path | None, unit_id: str, records: Path | None = None) -> bool:
    """Done: its archive came back done (in RUNS), or its record is committed (`record`)."""
    if runs and (runs / f"{unit_id}.tgz").is_file() and archive_status(runs / f"{unit_id}.tgz") == "done":
        return True
    if not records:
        return False
    for where in (records, parked(records)):
        unit_json = where / unit_id / "unit.json"
        if unit_json.is_file():
            return json.loads(unit_json.read_text()).get("status") == "done"
    return False


def steps_of(args: str) -> int:
    words = shlex.split(args)
    def opt(name: str, default: int) -> int:
        return int(words[words.index(name) + 1]) if name in words[:-1] else default
    return opt("--steps", REAR_STEPS - 50) + opt("--warmup-steps", 50)


# ------------------------------------------------------------------------------------- units

def units_for(args: argparse.Namespace) -> list[dict]:
    """[{id, unit (gpu_unit.sh words), minutes, tests, input}] of the plan, in order."""
    out = []
    rt = f" {REHEARSE_TRAIN}" if args.rehearse else ""

    def bench():
        out.append({"id": "bench", "words": f"bench {args.bench_args}".strip(),
                    "minutes": args.bench_min})

    def rear(name: str, targs: str, steps: int | None = None):
        extra = f" {REHEARSE_REAR}{rt}" if args.rehearse else ""
        minutes = EST["rear_fixed"] + (steps or steps_of(targs)) * EST["rear_s_per_step"] / 60
        out.append({"id": f"train-rear-{name}", "words": f"train-rear {name} {targs}{extra}".strip(),
                    "minutes": round(minutes, 1)})

    def baseline(method: str, name: str, seed: int, budget: int, targs: str = ""):
        out.append({"id": f"train-baseline-{name}",
                    "words": f"train-baseline {method} {name} {seed} {budget} {targs}{rt}".strip(),
                    "minutes": EST[method]})

    def test(name: str, source_id: str, rear_: bool):
        out.append({"id": f"eval-test-{name}", "words": f"eval-test {name}", "tests": True,
                    "input": f".gpu/in/{source_id}.tgz",
                    "minutes": EST["test-rear" if rear_ else "test-baseline"]})

    if args.plan == "bench":
        bench()
    elif args.plan == "recipe":
        if not args.rear:
            sys.exit('recipe: give the REAR units, e.g. --rear A="--seed 0" --rear B="--set lr=1e-4"')
        if not args.no_bench:
            bench()
        for name, targs in args.rear:
            rear(name, targs)
    elif args.plan == "protocol":
        # Per seed, each training unit followed by its test unit (kept in one session by the
        # packer, so no checkpoint has to outlive a loan), rag-ft and closed-book-ft beside REAR's
        # linear head; the low-rank head's seeds after; the untuned readers last.
        budget = REHEARSE_BUDGET if args.rehearse else args.budget
        frozen = f"-c {FROZEN}"
        for s in args.seeds:
            rear(f"linear-s{s}", f"{frozen} --seed {s}", steps=REAR_STEPS_FAST)
            test(f"linear-s{s}", f"train-rear-linear-s{s}", True)
            baseline("rag-ft", f"ragft-s{s}", s, budget, frozen)
            test(f"ragft-s{s}", f"train-baseline-ragft-s{s}", False)
            baseline("closed-book-ft", f"cbft-s{s}", s, budget, frozen)
            test(f"cbft-s{s}", f"train-baseline-cbft-s{s}", False)
        for s in args.seeds:
            rear(f"lowrank-s{s}", f"{frozen} --seed {s} --set rear_head=lowrank_attn --set head_lr=0 --set head_center=false", steps=REAR_STEPS_FAST)
            test(f"lowrank-s{s}", f"train-rear-lowrank-s{s}", True)
        out.append({"id": "eval-untuned", "words": "eval-untuned", "tests": True,
                    "minutes": EST["untuned"]})
        for a, b in zip(out, out[1:]):  # a training unit travels with the test unit after it
            a["paired"] = b.get("input") == f".gpu/in/{a['id']}.tgz"
    return out


def plan(args: argparse.Namespace, root: Path) -> dict:
    parts, stage = read_parts(root)
    tree = tree_mib(root)
    core = [p for p in parts if p["group"] == "core"]
    test = [p for p in parts if p["group"] == "test"]
    runs = Path(args.runs) if args.runs else None
    units = units_for(args)
    records = None if args.rehearse else RECORDS  # a rehearsal counts only what it brought back
    skipped = [u["id"] for u in units if unit_done(runs, u["id"], records)]
    todo = [u for u in units if u["id"] not in skipped]
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in REHEARSE_ENV.items()) + " " if args.rehearse else ""
    extra_carry = list(REHEARSE_CARRY) if args.rehearse else []
    size_of = {p["name"]: p["mib"] for p in parts}

    def mib(path: str) -> float:
        if path.startswith(".gpu/p") and path[len(".gpu/"):] in size_of:
            return size_of[path[len(".gpu/"):]]
        p = root / path
        if p.is_file():
            return p.stat().st_size / MIB
        if p.is_dir():
            return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) / MIB
        return 12.0 if path.startswith(".gpu/in/") else 0.0  # a REAR archive: ~12 MiB

    def call(carry: list[str], words: str, minutes: float, unit: str | None, note: str = "") -> dict:
        # The rehearsal's extra carry (the tiny model) is left out of the sizes, so that the
        # rehearsed plan has the shape of the real one (its calls stay under the tool's 64 MiB).
        size = tree + sum(mib(c) for c in carry)
        carry = carry + extra_carry
        budget = "" if unit is None else f"--budget {args.unit_budget} "
        cmd = f"{env}bash scripts/gpu_unit.sh {budget}{words}"
        return {"carry": carry, "command": cmd, "unit": unit, "carry_mib": round(size, 1),
                "minutes": round(minutes + EST["call"] + EST["per_mib"] * size, 2), "note": note,
                "timeout_s": CALL_S, "missing": [c for c in carry if not (root / c).exists()]}

    test_carry = [f".gpu/{p['name']}" for p in test]
    limit = args.session_min - args.margin
    sessions: list[dict] = []
    calls: list[dict] = []
    used = 0.0 if args.staged else EST["start"]
    staged, tests_staged = args.staged, args.staged and args.tests_staged
    for i, u in enumerate(todo):
        for attempt in (0, 1):
            # the staging calls (every core part but the last, alone), then the unit's call,
            # carrying the last core part, the test part(s) for a test unit, and its input
            need = [] if staged else [call([f".gpu/{p['name']}"], "status", 0.0, None, "stage")
                                      for p in core[:-1]]
            carry = [] if staged else [f".gpu/{core[-1]['name']}"]
            if u.get("tests") and not tests_staged:
                carry += test_carry
            if u.get("input") and not (staged and Path(u["input"]).stem in {c["unit"] for c in calls}):
                carry.append(u["input"])  # not when its training ran on this machine
            unit_min = u["minutes"] + (0.0 if staged else EST["env"])
            c = call(carry, u["words"], unit_min, u["id"])
            # Over the cap: parts go ahead alone (test parts first, then the core one); the
            # unit's input stays in its own call (gpu_unit.sh keeps inputs too, in /tmp/in).
            movable = [x for x in carry if x in test_carry] + [x for x in carry if x.startswith(".gpu/p")
                                                               and x not in test_carry]
            while c["carry_mib"] > CALL_CAP_MIB and movable:
                x = movable.pop(0)
                carry.remove(x)
                need.append(call([x], "status", 0.0, None, "stage"))
                c = call(carry, u["words"], unit_min, u["id"])
            cost = sum(n["minutes"] for n in need) + c["minutes"]
            # a paired training unit needs room for its test unit too (roughly: its minutes
            # and a call carrying the test part), or both go to the next session
            after = 0.0
            if u.get("paired"):
                nxt = todo[i + 1] if i + 1 < len(todo) else None
                after = nxt["minutes"] + EST["call"] + EST["per_mib"] * (tree + 12.0) if nxt else 0.0
            if attempt == 0 and calls and used + cost + after > limit:
                sessions.append({"calls": calls, "minutes": round(used, 1)})
                calls, used = [], EST["start"]  # a new session starts a bare machine
                staged = tests_staged = False
                continue
            break
        calls += need + [c]
        used += cost
        staged = True
        tests_staged = tests_staged or bool(u.get("tests"))
    if calls:
        sessions.append({"calls": calls, "minutes": round(used, 1)})
    n = 0
    for s in sessions:
        for c in s["calls"]:
            n += 1
            c["n"] = n
    return {"plan": args.plan, "stage": stage, "tree_mib": round(tree, 1), "parts": parts,
            "skipped": skipped, "sessions": sessions, "session_min": args.session_min,
            "runs": str(runs) if runs else None, "rehearse": args.rehearse}


def show(p: dict) -> None:
    parts = " ".join(f"{x['name']}={x['mib']:.1f}MiB({x['group']})" for x in p["parts"])
    stage = p["stage"] or "(not built: python scripts/gpu_stage.py build)"
    print(f"plan {p['plan']}: stage {stage}, parts {parts}, tree {p['tree_mib']} MiB travels "
          "with every call")
    if p["skipped"]:
        print(f"done already (archives in {p['runs']}, or recorded in docs/results/protocol): "
              f"{', '.join(p['skipped'])}")
    if not p["sessions"]:
        print("nothing left to run")
        return
    for i, s in enumerate(p["sessions"], 1):
        over = s["minutes"] > p["session_min"]
        print(f"\nsession {i}: {s['minutes']:.1f} of {p['session_min']:.0f} device minutes"
              f"{' (OVER)' if over else ''}, a bare machine's start ({EST['start']} min) included"
              " unless --staged")
        for c in s["calls"]:
            miss = f"  [not here yet: {', '.join(c['missing'])}]" if c["missing"] else ""
            if c["minutes"] > CALL_S / 60:
                miss += "  [OVER one call's 10 minutes: the unit stops at its budget; run it again]"
            print(f"  #{c['n']:<2} {c['minutes']:4.1f} min  carry {json.dumps(c['carry'])} "
                  f"({c['carry_mib']} MiB with the tree){miss}")
            print(f"       {c['command']}")
    total = sum(s["minutes"] for s in p["sessions"])
    print(f"\ntotal {total:.1f} device minutes in {len(p['sessions'])} session(s) of "
          f"{p['session_min']:.0f}; each call timeout_s {CALL_S}, made at once after the last.")
    print("after every call: python scripts/gpu_plan.py collect <files_at> <runs dir>; a reply with "
          "a new machine= id or env=not-ready means the machine was lost: re-plan with --runs.")


# ------------------------------------------------------------------------------------ collect

def collect(src: Path, runs: Path, root: Path) -> None:
    runs.mkdir(parents=True, exist_ok=True)
    inbox = root / ".gpu" / "in"
    got = []
    for f in sorted(src.glob("*.tgz")):
        shutil.copyfile(f, runs / f.name)
        st = archive_status(runs / f.name)
        got.append(f"{f.name} ({st})")
        if f.name.startswith("train-") and st == "done":
            inbox.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, inbox / f.name)
    merged_file = runs / "units.json"
    merged = json.loads(merged_file.read_text()) if merged_file.is_file() else {"units": {}}
    new = src / "units.json"
    if new.is_file():
        data = json.loads(new.read_text())
        for uid, row in data.get("units", {}).items():
            row = dict(row, machine=row.get("machine", data.get("machine")))
            old = merged["units"].get(uid)
            if old and old.get("status") == "done" and row.get("status") != "done":
                continue  # a lost machine's record never undoes a unit already brought back
            merged["units"][uid] = row
        merged["last_machine"] = data.get("machine")
    merged_file.write_text(json.dumps(merged, indent=1) + "\n")
    if (src / "status.json").is_file():
        shutil.copyfile(src / "status.json", runs / "status.json")
        st = json.loads((src / "status.json").read_text())
        print(f"STATUS env={st['env']} parts={','.join(st['parts_kept'])} next: {st['next']}")
    print(f"collected into {runs}: {', '.join(got) or 'no archive'}")
    done = sorted(u for u, r in merged["units"].items() if r.get("status") == "done")
    print(f"done: {', '.join(done) or 'none'}")


def rows_complete(tar: tarfile.TarFile, unit_id: str) -> list[str]:
    """An evaluation archive's report dirs whose rows.jsonl answers every question its
    settings.json selected; [] when any report dir falls short (or there is none). A test unit
    its time limit cut after the answers were written, before its last summaries, has them all."""
    names = {m.name for m in tar.getmembers() if m.isfile()}
    dirs = sorted(n[: -len("/settings.json")] for n in names
                  if n.startswith(unit_id + "/") and n.endswith("/settings.json"))
    for d in dirs:
        if f"{d}/rows.jsonl" not in names:
            return []
        wanted = set(json.load(tar.extractfile(f"{d}/settings.json"))["dataset"]["selected_ids"])
        rows = tar.extractfile(f"{d}/rows.jsonl").read().split(b"\n")[:-1]  # a torn last row is no answer
        if not wanted or wanted - {json.loads(r)["id"] for r in rows if r.strip()}:
            return []
    return dirs


def record(runs: Path, records: Path = RECORDS) -> None:
    """Every done archive in RUNS into records/ID/: its files but the weights (chosen/ holds
    them; the checkpoints that ship are committed under checkpoints/) and an evaluation's
    report.json (rebuilt from settings.json + rows.jsonl: rearqa.eval.runner.build_report);
    rows.jsonl and every file over 256 KiB gzipped (NAME.gz). An evaluation archive that is not
    done is recorded too when every report dir in it has all its rows (`rows_complete`); its
    unit.json keeps the status it came back with, and what it lacks is printed."""
    for f in sorted(runs.glob("*.tgz")):
        unit_id = f.name[: -len(".tgz")]
        status = archive_status(f)
        dest = records / unit_id
        with tarfile.open(f) as tar:
            if status != "done":
                complete = unit_id.startswith("eval-") and rows_complete(tar, unit_id)
                if not complete:
                    continue
                print(f"{unit_id} came back {status}, with every answer written in "
                      f"{', '.join(d[len(unit_id) + 1:] for d in complete)}: recorded; a summary its "
                      f"cut left unwritten is missing (report.json is rebuilt from the rows)")
            members = tar.getmembers()
            names = {m.name for m in members}
            for m in members:
                rel = Path(m.name).relative_to(unit_id) if m.name.startswith(unit_id + "/") else None
                if not m.isfile() or rel is None or rel.parts[0] == "chosen" or ".." in rel.parts:
                    continue
                if rel.name == "report.json" and str(Path(m.name).with_name("rows.jsonl")) in names:
                    continue
                data = tar.extractfile(m).read()
                out = dest / rel
                if rel.name == "rows.jsonl" or len(data) > 256 * 1024:
                    out, data = out.with_name(out.name + ".gz"), gzip.compress(data, mtime=0)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(data)
        print(f"recorded {unit_id} -> {dest}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "collect":
        if len(argv) != 3:
            sys.exit("usage: gpu_plan.py collect FILES_AT RUNS_DIR")
        collect(Path(argv[1]), Path(argv[2]), repo_root())
        return
    if argv and argv[0] == "record":
        if len(argv) not in (2, 3):
            sys.exit("usage: gpu_plan.py record RUNS_DIR [RECORDS_DIR]")
        default = parked(RECORDS) if parked(RECORDS).parent.is_dir() else RECORDS  # during a loan
        record(Path(argv[1]), Path(argv[2]) if len(argv) == 3 else default)
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("plan", choices=["bench", "recipe", "protocol"])
    p.add_argument("--runs", help="where the returned archives were collected: skip what is done")
    p.add_argument("--staged", action="store_true", help="the machine is warm with env=ready")
    p.add_argument("--tests-staged", action="store_true", help="with --staged: tests=ready too")
    p.add_argument("--rear", action="append", default=[], metavar='NAME="ARGS"',
                   help="recipe: a REAR training unit (repeat); ARGS go to train rear / --set K=V")
    p.add_argument("--bench-args", default="", help="arguments of scripts/bench_train.py")
    p.add_argument("--bench-min", type=float, default=EST["bench"], help="bench's minutes")
    p.add_argument("--no-bench", action="store_true", help="recipe without the bench unit")
    p.add_argument("--budget", type=int, default=FROZEN_BUDGET, help="protocol: baselines' tokens")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--unit-budget", type=int, default=UNIT_BUDGET_S, help="gpu_unit.sh --budget")
    p.add_argument("--session-min", type=float, default=SESSION_MIN)
    p.add_argument("--margin", type=float, default=1.0, help="minutes left unplanned per session")
    p.add_argument("--rehearse", action="store_true", help="CPU-sized units (gpu_rehearse.sh)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    pairs = []
    for item in args.rear:
        name, sep, targs = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z0-9._-]+", name):
            sys.exit(f'--rear {item!r}: NAME="ARGS" with NAME of letters, digits, . _ -')
        pairs.append((name, targs))
    if len({n for n, _ in pairs}) != len(pairs):
        sys.exit("--rear: two units with one NAME")
    args.rear = pairs
    result = plan(args, repo_root())
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        show(result)


if __name__ == "__main__":
    main()
