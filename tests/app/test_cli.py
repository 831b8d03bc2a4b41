"""The `rearqa` command line, run as a user runs it (a subprocess)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

DATA = Path(__file__).parents[1] / "data"
COMMANDS = [[], ["data", "prepare"], ["index", "add"], ["index", "delete"], ["index", "stats"],
            ["index", "rebuild"], ["ask"], ["eval"], ["compare"], ["ui"], ["serve"], ["inspect"],
            ["inspect", "heads"]]


def rearqa(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "rearqa.app.cli", *map(str, args)],
                            capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"rearqa {args} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) or "rearqa" for c in COMMANDS])
def test_every_command_has_help(command):
    out = rearqa(*command, "--help").stdout
    assert "Usage:" in out and "--help" in out


@pytest.fixture(scope="module")
def cli_config(scratch_home):
    config = scratch_home / "config.yaml"
    config.write_text(yaml.safe_dump({"k": 2, "retriever": {"collection": "mini"},
                                      "reader": {"max_new_tokens": 12}}))
    return scratch_home, config


@pytest.mark.slow
def test_index_ask_delete_round_trip(cli_config, tmp_path):
    home, config = cli_config
    common = ["--config", config, "--home", home]
    added = rearqa("index", "add", DATA / "mini_corpus.jsonl", *common)
    assert "6" in added.stdout
    stats = json.loads(rearqa("index", "stats", *common).stdout)
    assert stats["chunks"] == 6

    out = rearqa("ask", "Who wrote Hamlet?", "--k", "1", *common).stdout.splitlines()
    assert "shakespeare" in out[0].lower()  # the answer on the first line
    assert out[1].startswith("[1] Hamlet")  # then the citations

    answer = json.loads(rearqa("ask", "Who wrote Hamlet?", "--json", *common).stdout)
    assert answer["citations"][0]["passage"]["id"].startswith("hamlet")

    hamlet_id = answer["citations"][0]["passage"]["id"]
    assert "deleted 1" in rearqa("index", "delete", "--id", hamlet_id, *common).stdout
    titles = json.loads(rearqa("ask", "Who wrote Hamlet?", "--json", *common).stdout)
    assert "Hamlet" not in [c["passage"]["title"] for c in titles["citations"]]


@pytest.mark.slow
def test_user_errors_exit_2_with_one_line(cli_config):
    home, config = cli_config
    result = rearqa("ask", "   ", "--config", config, "--home", home, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: question is empty")
    bad = rearqa("ask", "x", "--config", "/nonexistent.yaml", check=False)
    assert bad.returncode == 2 and "does not exist" in bad.stderr


@pytest.mark.slow
def test_eval_on_a_question_file_writes_reports_and_resumes(cli_config, tmp_path):
    home, config = cli_config
    rearqa("index", "add", DATA / "mini_corpus.jsonl", "--config", config, "--home", home)
    out = tmp_path / "run"
    args = ["eval", "--dataset", DATA / "mini_questions.jsonl", "--k", "2", "--out", out,
            "--config", config, "--home", home]
    first = rearqa(*args, "--limit", "2")
    assert "mini_questions.jsonl:3: not valid JSON" in first.stderr  # the bad line, by number ...
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["q1", "q2"]
    rearqa(*args)  # ... and the run resumes with the one question it has not done
    report = json.loads((out / "report.json").read_text())
    assert [r["id"] for r in report["rows"]] == ["q1", "q2", "q3"]
    assert (out / "report.md").is_file() and (out / "recall_at_k.png").is_file()


@pytest.mark.slow
def test_ask_on_the_embedded_default(prepared_home):
    """The README's example on the default wiki collection (built on first use)."""
    out = rearqa("ask", "Who wrote Hamlet?", "--home", prepared_home).stdout.splitlines()
    assert out[0].strip() and not out[0].startswith("[")  # the answer comes first ...
    citations = [line for line in out[1:] if line.startswith("[")]
    assert len(citations) == 5  # ... then the default k=5 citations, best first
    assert any("Hamlet" in line or "Shakespeare" in line for line in citations)


@pytest.mark.slow
def test_eval_rear_takes_routing_and_fallback(cli_config, tmp_path):
    home, config = cli_config
    rearqa("index", "add", DATA / "mini_corpus.jsonl", "--config", config, "--home", home)
    out = tmp_path / "rear"
    rearqa("eval", "--dataset", DATA / "mini_questions.jsonl", "--k", "2", "--limit", "1",
           "--method", "rear", "--routing", "path_reliability", "--fallback", "abstain",
           "--out", out, "--config", config, "--home", home)
    report = json.loads((out / "report.json").read_text())
    assert report["pipeline_config"]["reader"]["routing"] == "path_reliability"
    assert report["pipeline_config"]["reader"]["fallback"] == "abstain"
    row = report["rows"][0]
    assert len(row["citations"]) == 2
    assert all(c["judgment"] in ("relevant", "irrelevant") for c in row["citations"])
    bad = rearqa("eval", "--dataset", DATA / "mini_questions.jsonl", "--method", "rear",
                 "--routing", "best", "--out", tmp_path / "bad", "--config", config,
                 "--home", home, check=False)
    assert bad.returncode == 2 and "routing" in bad.stderr


@pytest.mark.slow
def test_ask_is_quiet_by_default_and_says_what_loads_when_asked(cli_config):
    """No library INFO lines (faiss's loader, the embedder, weight-loading bars) at the default
    level; -v shows them."""
    home, config = cli_config
    common = ["--config", config, "--home", home]
    rearqa("index", "add", DATA / "mini_corpus.jsonl", *common)  # idempotent
    quiet = rearqa("ask", "Who wrote Hamlet?", "--k", "1", *common)
    assert quiet.stderr == "" and quiet.stdout.strip()
    loud = rearqa("-v", "ask", "Who wrote Hamlet?", "--k", "1", *common)
    assert "INFO" in loud.stderr
    bad = rearqa("--log-level", "chatty", "ask", "Who wrote Hamlet?", *common, check=False)
    assert bad.returncode == 2 and "choose one of" in bad.stderr


@pytest.mark.slow
def test_rear_ask_is_quiet_and_shows_each_passages_calibrated_probability(cli_config):
    """The shipped REAR checkpoint through `rearqa ask --method rear`: nothing on stderr, and each
    citation says how REAR read it and how likely (its dev-select calibration) it holds the answer."""
    home, config = cli_config
    common = ["--config", config, "--home", home]
    rearqa("index", "add", DATA / "mini_corpus.jsonl", *common)  # idempotent
    result = rearqa("ask", "Who wrote Hamlet?", "--k", "2", "--method", "rear", *common)
    assert result.stderr == ""
    cited = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert len(cited) == 2 and all("likely to hold the answer)" in line and "read as " in line for line in cited)


@pytest.mark.parametrize("command", [["ask"], ["eval"], ["ui"], ["serve"]])
def test_every_reader_command_takes_hf_adapter(command, tmp_path):
    assert "--hf-adapter" in rearqa(*command, "--help").stdout
    args = {"ask": ["Who wrote Hamlet?"], "eval": ["--dataset", "nq-test", "--out", tmp_path / "e"]}
    bad = rearqa(*command, *args.get(command[0], []), "--hf-adapter", "fused", "--home", tmp_path, check=False)
    assert bad.returncode == 2, bad.stderr[-2000:]
    assert bad.stderr.startswith("error: ") and "hf_adapter" in bad.stderr and "unmerged" in bad.stderr
