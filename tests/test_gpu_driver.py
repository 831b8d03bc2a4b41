"""The GPU driver's scripts (scripts/gpu_stage.py, gpu_units.py, gpu_plan.py): parts that
reassemble bit-exact, refused corrupt parts, archives within the limit, plans that resume.
(scripts/gpu_rehearse.sh runs the whole driver; these are the fast checks.)"""
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
MIB = 1 << 20


def load(name):
    sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def staged_repo(tmp_path, monkeypatch):
    """A git repo with .gpu/ ignored, a fake GGUF, wheels and snapshot, built into parts."""
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / ".gitignore").write_text("/.gpu/\n/in/\n")
    (repo / "in" / "bundle").mkdir(parents=True)
    (repo / "in" / "whl").mkdir()
    rng = __import__("random").Random(0)
    (repo / "in" / "model.gguf").write_bytes(rng.randbytes(int(2.5 * MIB)))
    for name in ("peft-0.21.2-py3-none-any.whl", "gguf-0.19.0-py3-none-any.whl"):
        (repo / "in" / "whl" / name).write_bytes(rng.randbytes(1000))
    splits = {"nq-dev-train": 3, "nq-dev-select": 2, "nq-test": 2, "squad-test": 1}
    (repo / "in" / "bundle" / "meta.json").write_text(json.dumps({"splits": splits}))
    for name in [*splits, "passages"]:
        (repo / "in" / "bundle" / f"{name}.jsonl.gz").write_bytes(rng.randbytes(300_000))
    monkeypatch.chdir(repo)
    stage = load("gpu_stage")
    stage.main(["build", "--gguf", "in/model.gguf", "--bundle", "in/bundle", "--wheels", "in/whl",
                "--call-mib", "1.2", "--slack-mib", "0"])
    return repo, stage


def test_parts_reassemble_bit_exact_and_report_what_is_missing(staged_repo, tmp_path):
    repo, stage = staged_repo
    summary = json.loads((repo / ".gpu" / "STAGE.json").read_text())
    parts = [p["part"] for p in summary["parts"]]
    groups = {p["part"]: p["group"] for p in summary["parts"]}
    assert len(parts) >= 4 and all(p["bytes"] <= summary["part_cap_bytes"] + 4096 for p in summary["parts"])
    # test splits only in the last part(s), after every core part
    assert [groups[p] for p in parts] == sorted((groups[p] for p in parts), key=["core", "test"].index)
    keep, staged = tmp_path / "keep", tmp_path / "staged"
    keep.mkdir()
    core = [p for p in parts if groups[p] == "core"]
    for p in core[:-1]:
        stage.stash(repo / ".gpu" / p, keep)
        stage.assemble(keep, staged)
    s = stage.state(keep, staged, None, None)
    assert s["core"] == "missing" and s["next"].startswith(f"carry .gpu/{core[-1]}")
    stage.stash(repo / ".gpu" / core[-1], keep)
    stage.assemble(keep, staged)
    assert (staged / stage.GGUF_REL).read_bytes() == (repo / "in" / "model.gguf").read_bytes()
    assert stage.ready(keep, staged, "whl/") and stage.ready(keep, staged, "llm/")
    assert not stage.ready(keep, staged, "bundle/")  # the test splits are not there yet
    s = stage.state(keep, staged, None, None)
    assert (s["core"], s["tests"]) == ("ready", "missing")
    for p in parts:
        assert stage.stash(repo / ".gpu" / p, keep).startswith(p)
    stage.assemble(keep, staged)
    for name in ("meta.json", "nq-test.jsonl.gz", "squad-test.jsonl.gz"):
        assert (staged / "bundle" / name).read_bytes() == (repo / "in" / "bundle" / name).read_bytes()
    assert stage.state(keep, staged, None, None)["tests"] == "ready"


def test_a_corrupt_or_truncated_part_is_refused_and_nothing_kept(staged_repo, tmp_path):
    repo, stage = staged_repo
    part = repo / ".gpu" / "p1"
    chunk = next(f for f in sorted(part.iterdir()) if f.name != "MANIFEST")
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 1
    chunk.write_bytes(bytes(data))
    keep = tmp_path / "keep"
    keep.mkdir()
    with pytest.raises(stage.PartError, match="corrupt"):
        stage.stash(part, keep)
    assert not any(keep.iterdir())
    manifest = (repo / ".gpu" / "p2" / "MANIFEST")
    manifest.write_text(manifest.read_text()[:200])
    with pytest.raises(stage.PartError, match="truncated"):
        stage.stash(repo / ".gpu" / "p2", keep)


def test_pack_keeps_chosen_and_logs_not_training_state(tmp_path, monkeypatch):
    units = load("gpu_units")
    u = tmp_path / "train-rear-A"
    for rel, size in {"chosen/adapter/adapter_model.safetensors": 100, "chosen/rear_config.json": 10,
                      "train/checkpoints/step-0000002/optimizer.safetensors": 100,
                      "train/final/adapter/adapter_model.safetensors": 100,
                      "train/train_log.jsonl": 10, "train.log": 10, "select/selection.json": 10,
                      "nq-test/rear/rows.jsonl": 10}.items():
        (u / rel).parent.mkdir(parents=True, exist_ok=True)
        (u / rel).write_bytes(b"x" * size)
    out = tmp_path / "out"
    out.mkdir()
    units.pack("train-rear-A", str(u), str(out))
    with tarfile.open(out / "train-rear-A.tgz") as tar:
        names = set(tar.getnames())
    assert names == {f"train-rear-A/{r}" for r in ("chosen/adapter/adapter_model.safetensors",
                     "chosen/rear_config.json", "train/train_log.jsonl", "train.log",
                     "select/selection.json", "nq-test/rear/rows.jsonl")}
    monkeypatch.setattr(units, "PACK_LIMIT", 10)
    with pytest.raises(SystemExit):
        units.pack("train-rear-A", str(u), str(out))


def test_set_values_are_numbers_where_yaml_would_read_strings(tmp_path):
    units = load("gpu_units")
    base = tmp_path / "base.yaml"
    base.write_text("lr: 3.0e-4\nsteps: 250\n")
    units.config(str(base), str(tmp_path / "out.yaml"), "lr=1e-4", "steps=10", "splits=[nq-dev-train]")
    import yaml
    assert yaml.safe_load((tmp_path / "out.yaml").read_text()) == {
        "lr": 1e-4, "steps": 10, "splits": ["nq-dev-train"]}


def _archive(path: Path, unit_id: str, status: str) -> None:
    with tarfile.open(path, "w:gz") as tar:
        data = json.dumps({"status": status}).encode()
        info = tarfile.TarInfo(f"{unit_id}/unit.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def test_plan_resumes_after_the_units_already_back(staged_repo, tmp_path):
    repo, _ = staged_repo
    plan = load("gpu_plan")
    argv = ["recipe", "--rear", "A=--seed 0", "--rear", "B=--seed 1", "--no-bench"]

    def calls(extra=()):
        args = plan_args(plan, argv + list(extra))
        return [c for s in plan.plan(args, repo)["sessions"] for c in s["calls"]]

    full = calls()
    core = [c for c in full if c["unit"] is None]
    assert [c["unit"] for c in full if c["unit"]] == ["train-rear-A", "train-rear-B"]
    assert all(c["command"].endswith("gpu_unit.sh status") for c in core)
    first_unit = next(c for c in full if c["unit"])
    assert first_unit["carry"] and first_unit["carry"][0].startswith(".gpu/p")  # the last core part
    runs = tmp_path / "runs"
    runs.mkdir()
    _archive(runs / "train-rear-A.tgz", "train-rear-A", "done")
    _archive(runs / "train-rear-B.tgz", "train-rear-B", "timeout")
    resumed = calls(["--runs", str(runs)])
    assert [c["unit"] for c in resumed if c["unit"]] == ["train-rear-B"]
    assert len([c for c in resumed if c["unit"] is None]) == len(core)  # re-staged
    warm = calls(["--runs", str(runs), "--staged"])
    assert [(c["unit"], c["carry"]) for c in warm] == [("train-rear-B", [])]


def plan_args(plan, argv):
    """gpu_plan's parsed arguments (its main() prints; this returns them)."""
    import argparse

    captured = {}

    def fake_plan(args, root):
        captured["args"] = args
        return {"sessions": []}

    real_plan, real_show = plan.plan, plan.show
    plan.plan, plan.show = fake_plan, lambda p: None
    try:
        plan.main(argv)
    finally:
        plan.plan, plan.show = real_plan, real_show
    assert isinstance(captured["args"], argparse.Namespace)
    return captured["args"]


def test_protocol_keeps_each_training_unit_with_its_test_and_records_count_as_done(
        staged_repo, tmp_path, monkeypatch):
    import gzip

    repo, _ = staged_repo
    plan = load("gpu_plan")
    monkeypatch.setattr(plan, "RECORDS", tmp_path / "records")

    def sessions(extra=()):
        return plan.plan(plan_args(plan, ["protocol", "--seeds", "0", *extra]), repo)["sessions"]

    for s in sessions():  # a test unit runs in the session of its training unit, carrying nothing
        units = [c["unit"] for c in s["calls"] if c["unit"]]
        for c in s["calls"]:
            if c["unit"] and c["unit"].startswith("eval-test-"):
                name = c["unit"][len("eval-test-"):]
                trained = [u for u in units if u.endswith(f"-{name}") and u.startswith("train-")]
                assert trained, (c["unit"], units)
                assert not any(x.startswith(".gpu/in/") for x in c["carry"]), c
    first = [c["unit"] for c in sessions()[0]["calls"] if c["unit"]]
    assert first[:2] == ["train-rear-linear-s0", "eval-test-linear-s0"]

    runs = tmp_path / "runs"
    runs.mkdir()
    with tarfile.open(runs / "eval-test-linear-s0.tgz", "w:gz") as tar:
        for name, data in (("unit.json", json.dumps({"status": "done"}).encode()),
                           ("nq-test/rear/rows.jsonl", b'{"id": "q1"}\n'),
                           ("nq-test/rear/report.json", b'{"rows": []}'),
                           ("nq-test/rank_metrics.json", b" " * 300_000),
                           ("chosen/adapter_model.safetensors", b"weights")):
            info = tarfile.TarInfo(f"eval-test-linear-s0/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    plan.record(runs, plan.RECORDS)
    kept = plan.RECORDS / "eval-test-linear-s0"
    assert gzip.decompress((kept / "nq-test/rear/rows.jsonl.gz").read_bytes()) == b'{"id": "q1"}\n'
    assert not (kept / "chosen").exists()  # weights are not recorded
    assert not (kept / "nq-test/rear/report.json").exists()  # rebuilt from rows.jsonl
    assert len(gzip.decompress((kept / "nq-test/rank_metrics.json.gz").read_bytes())) == 300_000
    after = [c["unit"] for s in sessions() for c in s["calls"] if c["unit"]]
    assert "eval-test-linear-s0" not in after and "train-rear-linear-s0" in after


def test_a_cut_test_unit_is_recorded_only_when_every_answer_is_in(tmp_path):
    plan = load("gpu_plan")
    runs, records = tmp_path / "runs", tmp_path / "records"
    runs.mkdir()

    def archive(unit_id, tqa_rows):
        settings = {"dataset": {"selected_ids": ["q1", "q2"]}}
        files = {"unit.json": {"status": "timeout"},
                 "nq-test/rear/settings.json": settings, "tqa-test/rear/settings.json": settings}
        with tarfile.open(runs / f"{unit_id}.tgz", "w:gz") as tar:
            for name, data in [*((n, json.dumps(v).encode()) for n, v in files.items()),
                               ("nq-test/rear/rows.jsonl", b'{"id": "q1"}\n{"id": "q2"}\n'),
                               ("tqa-test/rear/rows.jsonl", tqa_rows)]:
                info = tarfile.TarInfo(f"{unit_id}/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

    archive("eval-test-a-s0", b'{"id": "q2"}\n{"id": "q1"}\n')  # cut after its last answer
    archive("eval-test-b-s0", b'{"id": "q1"}\n')  # cut while answering
    archive("eval-test-c-s0", b'{"id": "q1"}\n{"id": "q2')  # cut while writing its last answer
    plan.record(runs, records)
    assert (records / "eval-test-a-s0" / "tqa-test/rear/rows.jsonl.gz").is_file()
    assert json.loads((records / "eval-test-a-s0" / "unit.json").read_text())["status"] == "timeout"
    assert not (records / "eval-test-b-s0").exists()
    assert not (records / "eval-test-c-s0").exists()


def test_park_moves_what_no_unit_reads_out_of_the_tree_and_back(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "checkpoints" / "rear").mkdir(parents=True)
    (repo / "docs" / "results").mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / ".gitignore").write_text("/.gpu/\n")
    (repo / "checkpoints" / "rear" / "w.bin").write_bytes(b"x" * MIB)
    (repo / "docs" / "results" / "r.json").write_text("{}")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    monkeypatch.chdir(repo)
    park = load("gpu_park")
    stage = load("gpu_stage")
    before = stage.travelling_tree_bytes(repo)
    park.park(repo)
    assert not (repo / "checkpoints").exists() and (repo / ".gpu/parked/checkpoints/rear/w.bin").is_file()
    assert stage.travelling_tree_bytes(repo) <= before - MIB
    with pytest.raises(SystemExit, match="already parked"):
        park.park(repo)
    park.unpark(repo)
    assert (repo / "checkpoints" / "rear" / "w.bin").read_bytes() == b"x" * MIB
    assert stage.travelling_tree_bytes(repo) == before


def test_a_full_weight_heal_extracts_to_a_lora_exactly_at_full_rank(tmp_path):
    """gpu_units.py extract-lora: the heal's update on q_proj / kv_a / kv_b as a LoRA; at a rank
    no smaller than any update's, merging it gives the healed weights back (to bf16 rounding of
    the saved adapter); a heal that moved anything else is refused."""
    import torch

    from rearqa.reader.finetuned import merge_lora
    from rearqa.testing import tiny_deepseek

    units = load("gpu_units")
    student, healed = tiny_deepseek(seed=3), tiny_deepseek(seed=3)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in healed.named_parameters():
            if name.rsplit(".", 2)[-2] in units.EXTRACT_MODULES:
                p.add_(0.05 * torch.randn_like(p))
    student.save_pretrained(tmp_path / "student")
    healed.save_pretrained(tmp_path / "healed")
    units.extract_lora(str(tmp_path / "student"), str(tmp_path / "healed"), str(tmp_path / "lora"), "64")
    report = json.loads((tmp_path / "lora" / "extract.json").read_text())
    assert report["kept_norm_min"] > 0.999999
    merged = merge_lora(tiny_deepseek(seed=3), tmp_path / "lora")
    ids = torch.randint(0, 20, (1, 7))
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, healed.eval()(input_ids=ids).logits,
                                   rtol=2e-2, atol=2e-2)
    units.extract_lora(str(tmp_path / "student"), str(tmp_path / "healed"), str(tmp_path / "lora2"), "2")
    assert json.loads((tmp_path / "lora2" / "extract.json").read_text())["kept_norm_min"] < 0.99
    with torch.no_grad():
        healed.model.layers[0].mlp.up_proj.weight.add_(1.0)
    healed.save_pretrained(tmp_path / "healed2")
    with pytest.raises(SystemExit, match="up_proj"):
        units.extract_lora(str(tmp_path / "student"), str(tmp_path / "healed2"), str(tmp_path / "l3"), "8")


def test_an_attention_heal_of_a_llama_extracts_over_the_modules_it_moved(tmp_path):
    """A KV-merged reader is a Llama: its `attention` heal moves q/k/v/o_proj, and the extracted
    LoRA covers exactly those (at full rank the healed weights come back); the fingerprint of a
    Llama records its attention and MLP projections."""
    import torch

    from rearqa.reader.backbone.fingerprint import fingerprint
    from rearqa.reader.finetuned import merge_lora
    from rearqa.testing import tiny_llama

    units = load("gpu_units")
    student, healed = tiny_llama(40, seed=2), tiny_llama(40, seed=2)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in healed.named_parameters():
            if ".self_attn." in name:
                p.add_(0.05 * torch.randn_like(p))
    student.save_pretrained(tmp_path / "student")
    healed.save_pretrained(tmp_path / "healed")
    units.extract_lora(str(tmp_path / "student"), str(tmp_path / "healed"), str(tmp_path / "lora"), "64")
    report = json.loads((tmp_path / "lora" / "extract.json").read_text())
    assert report["modules"] == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert report["kept_norm_min"] > 0.999999
    merged = merge_lora(tiny_llama(40, seed=2), tmp_path / "lora")
    for name, p in merged.named_parameters():
        torch.testing.assert_close(p, dict(healed.named_parameters())[name], rtol=0, atol=2e-3)
    with pytest.raises(SystemExit, match="nothing was healed"):
        units.extract_lora(str(tmp_path / "student"), str(tmp_path / "student"), str(tmp_path / "l2"), "8")
    names = set(fingerprint(student)["tensors"])
    assert "layers.0.self_attn.k_proj" in names and "layers.0.mlp.down_proj" in names


def test_distill_settings_and_the_kl_choice(tmp_path):
    units = load("gpu_units")
    assert units.parse_setting("96+64") == ("transmla", {"kv_lora_rank": 96, "rope_dim": 64})
    assert units.parse_setting("x128+32") == ("xecomla", {"kv_lora_rank": 128, "rope_dim": 32})
    assert units.parse_setting("kv1") == ("kv_merge", {"kv_heads": 1})
    with pytest.raises(SystemExit, match="RANK\\+ROPE"):
        units.parse_setting("96")
    kl = tmp_path / "kl.json"
    kl.write_text(json.dumps({"students": {"conv": {"mean_kl": 1.2}, "conv@a": {"mean_kl": 0.3},
                                           "b": {"mean_kl": 0.2}, "c": {"mean_kl": 0.25}}}))
    import contextlib
    import io as _io
    out = _io.StringIO()
    with contextlib.redirect_stdout(out):
        units.best_kl(str(kl), "conv", "lora", "attention", "new")
    assert out.getvalue().strip() == "attention"
    with pytest.raises(SystemExit, match="expected"):
        units.best_kl(str(kl), "conv", "lora", "new")


def test_a_failure_is_logged_as_it_happens_for_a_run_its_time_limit_cuts(tmp_path):
    """tests/conftest.py's REARQA_FAILURE_LOG hook (scripts/gpu_kernels.sh): a failing test's name
    and traceback land in the file when it fails, a passing one's do not."""
    (tmp_path / "conftest.py").write_text((Path(__file__).parent / "conftest.py").read_text())
    (tmp_path / "test_two.py").write_text("def test_passes():\n    assert True\n\n"
                                          "def test_fails():\n    assert 1 == 2, 'the reason'\n")
    log = tmp_path / "failures.log"
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_XDIST_WORKER"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                         env={**env, "REARQA_FAILURE_LOG": str(log)}, cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 1, run.stdout[-2000:]
    text = log.read_text()
    assert "FAILED test_two.py::test_fails (call)" in text and "the reason" in text
    assert "test_passes" not in text


def test_each_tests_end_is_logged_as_it_happens_with_its_duration(tmp_path):
    """tests/conftest.py's REARQA_DURATION_LOG hook (scripts/gpu_kernels.sh): every test that ends
    (passed, failed, or skipped at its setup) gets one line with its outcome and duration."""
    (tmp_path / "conftest.py").write_text((Path(__file__).parent / "conftest.py").read_text())
    (tmp_path / "test_three.py").write_text("import time, pytest\n\n"
                                            "def test_slow():\n    time.sleep(0.3)\n\n"
                                            "def test_fails():\n    assert False\n\n"
                                            "@pytest.mark.skip(reason='no gpu')\ndef test_skipped():\n    pass\n")
    log = tmp_path / "durations.log"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_XDIST_WORKER", "REARQA_FAILURE_LOG")}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                         env={**env, "REARQA_DURATION_LOG": str(log)}, cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 1, run.stdout[-2000:]
    lines = {line.split()[2]: line.split() for line in log.read_text().splitlines()}
    assert set(lines) == {f"test_three.py::test_{n}" for n in ("slow", "fails", "skipped")}
    slow, fails, skipped = (lines[f"test_three.py::test_{n}"] for n in ("slow", "fails", "skipped"))
    assert slow[0] == "passed" and float(slow[1].rstrip("s")) >= 0.3 and slow[3] == "(call)"
    assert fails[0] == "failed" and skipped[0] == "skipped" and skipped[3] == "(setup)"


def test_tests_an_earlier_run_timed_run_longest_first(tmp_path):
    """tests/conftest.py's REARQA_DURATIONS hook (scripts/gpu_kernels.sh): the tests an earlier run's
    duration log timed run longest first, after the tests it never timed; a test timed twice counts
    at its longer time, and lines that are not a duration are passed over."""
    (tmp_path / "conftest.py").write_text((Path(__file__).parent / "conftest.py").read_text())
    (tmp_path / "test_order.py").write_text("".join(f"def test_{n}():\n    pass\n\n" for n in "abcde"))
    earlier = tmp_path / "earlier.log"
    earlier.write_text("passed 0.50s test_order.py::test_a (call)\n"
                       "passed 86.00s test_order.py::test_c (call)\n"
                       "skipped 0.00s test_order.py::test_d (setup)\n"
                       "passed 1.00s test_order.py::test_a (call)\n"
                       "not a duration line\n"
                       "passed 20.25s test_order.py::test_e (call)\n")
    log = tmp_path / "order.log"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_XDIST_WORKER", "REARQA_FAILURE_LOG")}

    def order(durations):
        log.unlink(missing_ok=True)
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_order.py"],
                             env={**env, "REARQA_DURATION_LOG": str(log), "REARQA_DURATIONS": durations},
                             cwd=tmp_path, capture_output=True, text=True)
        assert run.returncode == 0, run.stdout[-2000:]
        return [line.split()[2].rsplit("_", 1)[1] for line in log.read_text().splitlines()]

    assert order(str(earlier)) == ["b", "c", "e", "a", "d"]
    assert order(str(tmp_path / "missing.log")) == ["a", "b", "c", "d", "e"]  # no log: as collected
    assert (Path(__file__).parent / "kernels" / "gpu-durations.log").is_file()  # the script's default


def test_only_a_run_whose_every_failure_ran_the_gpu_out_of_memory_is_run_again(tmp_path):
    """gpu_units.py oom-failures over tests/conftest.py's REARQA_FAILURE_LOG (scripts/gpu_kernels.sh
    runs those tests again one at a time): it names each test that failed out of memory once, and
    names none when any failure is of another kind."""
    (tmp_path / "conftest.py").write_text((Path(__file__).parent / "conftest.py").read_text())
    (tmp_path / "test_gpu.py").write_text(
        "import pytest\n\n"
        "def test_passes():\n    assert True\n\n"
        "@pytest.mark.parametrize('shape', ['128x512+64'])\n"
        "def test_kernel(shape):\n    raise RuntimeError('Triton Error [CUDA]: out of memory')\n\n"
        "@pytest.fixture\ndef card():\n    yield 'cuda'\n"
        "    raise RuntimeError('CUDA error: out of memory')\n\n"
        "def test_reference(card):\n    raise RuntimeError('torch.OutOfMemoryError: CUDA out of memory')\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_XDIST_WORKER", "REARQA_DURATION_LOG")}

    def failures_of(test_file, log):
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_file],
                       env={**env, "REARQA_FAILURE_LOG": str(log)}, cwd=tmp_path, capture_output=True)
        return subprocess.run([sys.executable, str(SCRIPTS / "gpu_units.py"), "oom-failures", str(log)],
                              capture_output=True, text=True)

    run = failures_of("test_gpu.py", tmp_path / "oom.log")
    assert run.returncode == 0, run.stderr
    # test_reference failed in its call and in its fixture's teardown: named once
    assert run.stdout.split() == ["test_gpu.py::test_kernel[128x512+64]", "test_gpu.py::test_reference"]
    (tmp_path / "test_mixed.py").write_text(
        "def test_oom():\n    raise RuntimeError('CUDA error: out of memory')\n\n"
        "def test_wrong():\n    assert 1 == 2, 'relative error 3e-2 over 1e-2'\n")
    run = failures_of("test_mixed.py", tmp_path / "mixed.log")
    assert run.returncode == 1 and run.stdout == ""
    (tmp_path / "empty.log").write_text("")
    units = load("gpu_units")
    with pytest.raises(SystemExit):
        units.oom_failures(str(tmp_path / "empty.log"))
