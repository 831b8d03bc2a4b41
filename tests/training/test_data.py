"""REAR training data on a hand-made snapshot: split refusal, labels, grades, groups, examples."""
import json

import pytest

from rearqa.config_errors import ConfigError
from rearqa.eval.bundle import Snapshot, write_jsonl_gz
from rearqa.testing import tiny_tokenizer
from rearqa.training.config import TrainConfig
from rearqa.training.data import (build_groups, choose_target, closed_book_examples,
                                  encode_chat_example, generation_examples, grade, group_stats,
                                  rag_examples, rear_batch, rear_inputs)

PASSAGES = {
    "a": ("Hamlet", "Hamlet is a tragedy by William Shakespeare."),
    "b": ("Stratford", "Shakespeare was born in Stratford."),
    "c": ("Plays", "A later play mentions Shakespeare once."),
    "d": ("Globe", "The Globe theatre in London."),
    "e": ("Paris", "Paris is the capital of France."),
    "f": ("Macbeth", "Macbeth is another tragedy."),
    "g": ("Elsinore", "Elsinore castle in Denmark."),
    "h": ("Year", "A bare year, 1600, appears here."),
    "i": ("Shakespeareana", "The Shakespeareana collection."),  # not a whole-token match
    "j": ("Avon", "Stratford upon Avon."),
}


def ranking(ids, top=1.0):
    return [[pid, round(top - i / 100, 3)] for i, pid in enumerate(ids)]


ROWS = [
    # a: dense 1 + BM25 1 (1.0); b: dense 2 only (0.8); c: dense 12, no BM25 (0.6)
    {"id": "q0", "question": "who wrote hamlet", "answers": ["Shakespeare", "W. Shakespeare"],
     "rankings": {"dense": ranking(["a", "b", "d", "e", "j", "x1", "x2", "x3", "x4",
                                                                           "x5", "x6", "c"]),
                  "bm25": ranking(["a", "f", "g", "h", "i"], 9.0)}},
    # no passage holds the answer
    {"id": "q1", "question": "capital of peru", "answers": ["Lima"],
     "rankings": {"dense": ranking(["e", "d"]), "bm25": ranking(["e", "g"], 5.0)}},
    # TriviaQA-style aliases: the alias the passages hold is the target, verbatim casing wins ties
    {"id": "q2", "question": "which city hosts the globe",
     "answers": ["The Big Smoke", "LONDON", "London"],
     "rankings": {"dense": ranking(["d", "e"]), "bm25": ranking(["d"], 3.0)}},
]
ROWS = [{**r, "answer_type": "other", "answerable": True} for r in ROWS]


@pytest.fixture()
def snapshot(tmp_path):
    passages = dict(PASSAGES)
    passages.update({f"x{i}": (f"Filler {i}", f"Filler passage number {i}.") for i in range(1, 7)})
    write_jsonl_gz(tmp_path / "passages.jsonl.gz",
                   [{"id": k, "title": t, "text": x} for k, (t, x) in passages.items()])
    for split in ("nq-dev-train", "nq-dev-select", "nq-test"):
        write_jsonl_gz(tmp_path / f"{split}.jsonl.gz", ROWS)
    (tmp_path / "meta.json").write_text(json.dumps(
        {"splits": {s: len(ROWS) for s in ("nq-dev-train", "nq-dev-select", "nq-test")},
         "depth": 20}))
    return Snapshot(tmp_path)


def by_id(group):
    return {p.id: p for p in group.passages}


@pytest.mark.parametrize("split", ["nq-dev-select", "nq-test", "tqa-test", "squad-test", "nq-dev"])
def test_non_dev_train_splits_are_refused_by_name(snapshot, split):
    for call in (lambda: build_groups(snapshot, ["nq-dev-train", split]),
                 lambda: rag_examples(snapshot, [split]),
                 lambda: closed_book_examples(snapshot, [split]),
                 lambda: TrainConfig(splits=[split])):
        with pytest.raises(ConfigError, match=split):
            call()


def test_labels_ranks_and_group_composition(snapshot):
    group = build_groups(snapshot, ["nq-dev-train"], group_size=6)[0]
    p = by_id(group)
    assert set(p) == {"a", "b", "c", "d", "f", "e"}  # 3 positives (half), 3 hard negatives
    assert [p[x].has_answer for x in "abc"] == [True] * 3
    assert not any(p[x].has_answer for x in "def")
    assert (p["a"].dense_rank, p["a"].bm25_rank) == (1, 1)
    assert (p["b"].dense_rank, p["b"].bm25_rank) == (2, None)
    assert (p["c"].dense_rank, p["c"].bm25_rank) == (12, None)
    assert (p["f"].dense_rank, p["f"].bm25_rank) == (None, 2)
    assert group.candidates == 16 and group.candidate_positives == 3
    # "Shakespeareana" is not the whole token "shakespeare": a negative, not even a candidate
    # positive; the hard negatives alternate dense (d, e) and BM25 (f) from the top.
    assert all(p[x].grade == 0.0 for x in "def")


def test_grades_order_positives_by_retriever_agreement(snapshot):
    p = by_id(build_groups(snapshot, ["nq-dev-train"], group_size=6)[0])
    assert (p["a"].grade, p["b"].grade, p["c"].grade) == (1.0, 0.8, 0.6)
    assert grade(True, 5, 5, agree_top=5) == 1.0 and grade(True, 6, None, agree_top=5) == 0.6
    assert grade(False, 1, 1, agree_top=5) == 0.0
    # A group of 4 keeps the 2 best-agreed positives (a, b) and drops the lone-retriever one (c).
    small = by_id(build_groups(snapshot, ["nq-dev-train"], group_size=4)[0])
    assert set(small) == {"a", "b", "d", "f"}


def test_group_order_is_seeded(snapshot):
    def ids(seed):
        return [p.id for p in build_groups(snapshot, ["nq-dev-train"], seed=seed)[0].passages]

    assert ids(0) == ids(0)
    assert any(ids(0) != ids(s) for s in range(1, 6))


def test_no_positive_question_keeps_an_all_negative_group(snapshot):
    group = build_groups(snapshot, ["nq-dev-train"])[1]
    assert group.passages and not any(p.has_answer for p in group.passages)
    stats = group_stats(build_groups(snapshot, ["nq-dev-train"]))
    assert stats["questions"] == 3 and stats["questions_without_positive"] == 1


def test_target_is_the_alias_the_passages_support():
    assert choose_target(["The Finer Grain", "Henry james", "Henry James"], [0, 3, 3],
                         ["Henry James wrote it.", "Henry James", "by Henry James"]) == "Henry James"
    assert choose_target(["🚁", "Helicopter"], [0, 0]) == "Helicopter"  # no support: first with a letter
    assert choose_target(["581 (second edition)"], [0]) == "581 (second edition)"


def test_target_on_snapshot_prefers_verbatim_casing(snapshot):
    group = build_groups(snapshot, ["nq-dev-train"])[2]
    assert group.target == "London"  # LONDON and London both match "The Globe theatre in London."


def test_generation_examples_and_noise_resistant_ratio(snapshot):
    group = build_groups(snapshot, ["nq-dev-train"], group_size=6)[0]
    examples = generation_examples(group, noise_ratio=1.0)
    relevant = [e for e in examples if e.judgment == "relevant"]
    noisy = [e for e in examples if e.noise_resistant]
    assert len(relevant) == 3 and len(noisy) == 3  # 1:1
    assert all(group.passages[e.passage].has_answer and not e.noise_resistant for e in relevant)
    assert all(not group.passages[e.passage].has_answer and e.judgment == "irrelevant"
               and e.target == group.target for e in noisy)
    assert len([e for e in generation_examples(group, 0.0) if e.noise_resistant]) == 1  # at least one
    # the hardest negatives first: best retriever rank 2 (f, BM25) and 3 (d, dense)
    two = [group.passages[e.passage].id for e in generation_examples(group, 2 / 3) if e.noise_resistant]
    assert sorted(two) == ["d", "f"]


def test_noise_resistant_inputs_mask_the_judgment_label(snapshot):
    tok = tiny_tokenizer()
    from rearqa.reader.rear import add_rear_tokens

    ids, _ = add_rear_tokens(tok)
    group = build_groups(snapshot, ["nq-dev-train"], group_size=6)[0]
    inputs = rear_inputs(group, tok, use_chat_template=False, noise_ratio=1 / 3)
    by_kind = {}
    for passage, x in zip(group.passages, inputs):
        after = x.input_ids[x.score_position + 1] if len(x.input_ids) > x.score_position + 1 else None
        kind = ("relevant" if after == ids.relevant else "noisy" if after == ids.irrelevant
                else "score-only")
        by_kind.setdefault(kind, []).append((passage, x))
    assert len(by_kind["relevant"]) == 3 and len(by_kind["noisy"]) == 1
    for _, x in by_kind["relevant"]:
        assert x.label_mask[x.score_position + 1]  # <RELEVANT> is learned
    for _, x in by_kind["noisy"]:
        judgment = x.score_position + 1
        assert not x.label_mask[judgment]  # <IRRELEVANT> carries no loss
        assert all(x.label_mask[judgment + 1:]) and len(x.input_ids) > judgment + 1  # the answer does
    for _, x in by_kind["score-only"]:
        assert len(x.input_ids) == x.score_position + 1 and not any(x.label_mask)
    batch = rear_batch([group], tok, use_chat_template=False)
    assert batch["input_ids"].shape[0] == 6
    assert batch["grades"].tolist() == pytest.approx([p.grade for p in group.passages])
    assert batch["group_ids"].tolist() == [0] * 6


def test_baseline_examples_share_questions_and_targets(snapshot):
    groups = build_groups(snapshot, ["nq-dev-train"])
    rag = rag_examples(snapshot, ["nq-dev-train"], k=2)
    closed = closed_book_examples(snapshot, ["nq-dev-train"])
    assert [e.id for e in rag] == [e.id for e in closed] == [g.id for g in groups]
    assert [e.target for e in rag] == [e.target for e in closed] == [g.target for g in groups]
    user = rag[0].messages[-1]["content"]
    assert "[1] Hamlet" in user and "[2] Stratford" in user and "[3]" not in user  # dense top-2
    assert "Context" not in closed[0].messages[-1]["content"]
    assert len(rag_examples(snapshot, ["nq-dev-train"], max_questions=1)) == 1


def test_chat_example_labels_only_the_answer():
    tok = tiny_tokenizer()
    from rearqa.training.data import ChatExample

    ex = ChatExample("q", [{"role": "user", "content": "who wrote hamlet ?"}], "shakespeare")
    ids, mask = encode_chat_example(tok, ex)
    answer = [i for i, m in zip(ids, mask) if m]
    assert answer == tok("shakespeare", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert mask[-len(answer):] == [True] * len(answer) and not any(mask[:-len(answer)])


def test_train_config_validates_and_loads_yaml(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("method: rag-ft\nsplits: [tqa-dev-train]\ntoken_budget: 1000\nlora_r: 8\n")
    cfg = TrainConfig.from_yaml(path, seed=3, device=None)
    assert (cfg.method, cfg.splits, cfg.lora_r, cfg.seed, cfg.device) == (
        "rag-ft", ["tqa-dev-train"], 8, 3, "auto")
    with pytest.raises(ConfigError, match="token_budget"):
        TrainConfig(method="rear", token_budget=10)
    with pytest.raises(ConfigError, match="lora_dropout"):
        TrainConfig(lora_dropout=1.5)
    with pytest.raises(ConfigError, match="valid settings"):
        TrainConfig.from_yaml(None, learning_rate=1e-4)


def test_unanswered_share_keeps_a_seeded_share_of_groups_without_a_positive(snapshot):
    everything = build_groups(snapshot, ["nq-dev-train"])
    assert [g.id for g in everything] == ["q0", "q1", "q2"]  # q1: no passage holds "Lima"
    assert [g.id for g in build_groups(snapshot, ["nq-dev-train"], unanswered_share=0.0)] == ["q0", "q2"]
    kept = {seed: "q1" in [g.id for g in build_groups(snapshot, ["nq-dev-train"], seed=seed,
                                                      unanswered_share=0.5)]
            for seed in range(20)}
    assert 0 < sum(kept.values()) < 20  # a coin per (seed, question), not all or nothing
    assert kept == {seed: "q1" in [g.id for g in build_groups(
        snapshot, ["nq-dev-train"], seed=seed, unanswered_share=0.5)] for seed in range(20)}
    with pytest.raises(ConfigError, match="unanswered_share"):
        TrainConfig(unanswered_share=1.5)


@pytest.mark.parametrize("mode", ["balanced", "none"])
def test_judgment_targets_of_a_training_batch(snapshot, mode):
    """balanced: a batch whose groups hold both kinds of passage labels both judgment tokens at
    the score position; none: it labels neither (the answers keep their loss either way)."""
    import torch

    tok = tiny_tokenizer()
    from rearqa.reader.rear import add_rear_tokens

    ids, _ = add_rear_tokens(tok)
    groups = build_groups(snapshot, ["nq-dev-train"], group_size=6)
    assert any(p.has_answer for p in groups[0].passages) and not all(p.has_answer for p in groups[0].passages)
    batch = rear_batch(groups, tok, use_chat_template=False, judgment_loss=mode)
    labels = batch["labels"]
    judged = {int(t) for t in labels[torch.isin(labels, torch.tensor([ids.relevant, ids.irrelevant]))]}
    assert judged == ({ids.relevant, ids.irrelevant} if mode == "balanced" else set())
    assert (labels != -100).sum() > 0  # the answers are still learned
    if mode == "balanced":
        inputs = rear_inputs(groups[0], tok, use_chat_template=False, judgment_loss=mode)
        for passage, x in zip(groups[0].passages, inputs):
            assert x.label_mask[x.score_position + 1]
            assert x.input_ids[x.score_position + 1] == (ids.relevant if passage.has_answer
                                                         else ids.irrelevant)


def test_unknown_judgment_loss_is_refused(snapshot):
    group = build_groups(snapshot, ["nq-dev-train"], group_size=6)[0]
    with pytest.raises(ValueError, match="judgment_loss='sometimes'"):
        rear_inputs(group, tiny_tokenizer(), use_chat_template=False, judgment_loss="sometimes")


def test_resampled_negatives_keep_the_positives_and_vary_the_negatives(snapshot):
    one = build_groups(snapshot, ["nq-dev-train"], group_size=4)
    three = build_groups(snapshot, ["nq-dev-train"], group_size=4, negative_samplings=3)
    assert len(three) == 3 * len(one)
    assert [g.id for g in three[:3]] == [one[0].id, f"{one[0].id}#1", f"{one[0].id}#2"]
    assert three[0] == one[0]  # the first sampling is the hard-negative group of before
    first, *others = three[:3]
    positives = {p.id for p in first.passages if p.has_answer}
    for group in others:
        assert {p.id for p in group.passages if p.has_answer} == positives
        assert len(group.passages) == len(first.passages)
    negatives = [frozenset(p.id for p in g.passages if not p.has_answer) for g in three[:3]]
    assert len(set(negatives)) > 1  # not always the same two of its negatives
    assert build_groups(snapshot, ["nq-dev-train"], group_size=4, negative_samplings=3) == three
