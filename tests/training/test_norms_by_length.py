"""scripts/norms_by_length.py: the monitor's norms over RAG prompts of growing length, for the real
base model, the shipped rag-ft adapter and the shipped REAR checkpoint, on a hand-made snapshot."""
from __future__ import annotations

import gzip
import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "norms_by_length.py"


def _snapshot(root: Path) -> Path:
    passages = [{"id": f"p{i}", "title": f"Title {i}", "text": " ".join(["word"] * 40 + [f"fact{i}"])}
                for i in range(3)]
    rows = [{"id": "q0", "question": "Who wrote Hamlet?", "answers": ["Shakespeare"],
             "rankings": {"dense": [[f"p{i}", 1.0 - i / 10] for i in range(3)]}}]
    for name, data in (("passages", passages), ("nq-dev-select", rows)):
        (root / f"{name}.jsonl.gz").write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in data).encode()))
    (root / "meta.json").write_text(json.dumps({"splits": {"nq-dev-select": 1}, "depth": 3}))
    return root


@pytest.mark.slow
def test_norms_grow_with_the_prompt_and_are_located(prepared_home, tmp_path):
    spec = importlib.util.spec_from_file_location("norms_by_length", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "by-length.json"
    report = script.main(["--snapshot", str(_snapshot(tmp_path)), "--questions", "1", "--k", "0", "3",
                          "--threads", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert sorted(report["results"]) == ["base", "rag-ft", "rear"]
    for name, by_k in report["results"].items():
        short, long = by_k["0"], by_k["3"]
        assert short["L"] < long["L"]  # three passages make the prompt longer
        for s in (short, long):
            assert len(s["layers"]) == 30
            assert s["sqrt_log_L"] == pytest.approx(math.sqrt(math.log(s["L"])), abs=1e-5)
            assert s["max_over_line"] == pytest.approx(max(s["q_max"], s["k_max"]) / s["sqrt_log_L"], abs=2e-3)
            assert s["where"]["k"]["max"] == pytest.approx(s["k_max"], rel=1e-4)  # (the script checks too)
            assert 0 <= s["where"]["q"]["position"] < s["L"]
    # the adapters change the weights the norms read: not the base model's numbers
    assert report["results"]["rag-ft"]["3"]["layers"] != report["results"]["base"]["3"]["layers"]
    with pytest.raises(SystemExit, match="ranks 3 passages"):
        script.main(["--snapshot", str(tmp_path), "--questions", "1", "--k", "5"])
