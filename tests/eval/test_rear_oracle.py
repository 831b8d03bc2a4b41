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


def test_passage_hits_count_the_trusted_passage():
    rows = [{"retrieved_ids": ["a", "b", "c", "d"], "retrieved_has_answer": [False, False, True, False],
             "citations": [{"id": p, "relevance": r} for p, r in zip("abcd", (0.0, 1.0, 0.5, 2.0))]},
            {"retrieved_ids": ["a", "b"], "retrieved_has_answer": [True, False],
             "citations": [{"id": "a", "relevance": 3.0}, {"id": "b", "relevance": 1.0}]}]
    assert load().passage_hits(rows) == {"highest relevance": 0.5, "dense top-1": 0.5,
                                         "any of the dense top-3": 1.0}
