"""scripts/rear_oracle.py: which of REAR's per-passage answers each picking rule takes."""
import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "rear_oracle.py"


def load():
    spec = importlib.util.spec_from_file_location("rear_oracle", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_picks_follow_relevance_dense_order_and_labels():
    row = {"prediction": "routed", "retrieved_ids": ["a", "b", "c"],
           "retrieved_has_answer": [False, True, True],
           "citations": [{"id": "c", "relevance": 2.0, "answer": "from c"},  # citation order is not dense order
                         {"id": "a", "relevance": -1.0, "answer": "from a"},
                         {"id": "b", "relevance": 0.5, "answer": "from b"}]}
    assert load().pick(row) == {"REAR as run": "routed", "highest relevance": "from c",
                                "dense top-1": "from a",
                                "first answer-containing (label oracle)": "from b"}
    row["retrieved_has_answer"] = [False, False, False]  # no label: the dense top-1
    assert load().pick(row)["first answer-containing (label oracle)"] == "from a"
