"""RearReader on tiny Llamas: one scoring forward, relevance-guided generation, routing, fallbacks.

The reader's own decode loop (continuing from the scoring pass's KV cache, left padded, many
questions at once) is checked token for token against `generate` on each unpadded prompt, and its
knowledge-consistency confidences against a full forward of the training-format sequence.
"""
import pytest
import torch

from rearqa.config_errors import ConfigError
from rearqa.reader import build_reader, get_reader_class
from rearqa.reader.base import first_line
from rearqa.reader.config import ReaderConfig, default_checkpoint_dir, resolve_adapter, resolve_checkpoint
from rearqa.reader.rear import (RearConfig, RearModel, RoutingConfig, answer_confidence,
                                build_rear_input, collate_rear_inputs, token_logprobs)
from rearqa.reader.rear.prompting import passage_text
from rearqa.reader.rear.reader import RearReader
from rearqa.testing import tiny_llama, tiny_tokenizer
from rearqa.types import Passage

TEXTS = ["hamlet is a tragedy written by shakespeare .", "paris is the capital of france",
         "the band was born in london in the year", "the river of the city"]
QUESTIONS = ["who wrote hamlet ?", "what is the capital of france ?"]
PASSAGES = [[Passage(id=f"p{i}", text=t, title="") for i, t in enumerate(TEXTS)],
            [Passage(id="q0", text=TEXTS[1], title="paris"), Passage(id="q1", text=TEXTS[3])]]
MAX_NEW = 6
pytestmark = pytest.mark.usefixtures("one_thread")  # fixture in tests/conftest.py


def make_model(head="linear", chat=False, routing=None, seed=0, question_first=False):
    tok = tiny_tokenizer()
    model = RearModel.from_base(tiny_llama(len(tok), seed=seed), tok,
                                RearConfig(head=head, use_chat_template=chat,
                                           routing=routing or RoutingConfig(),
                                           question_first=question_first))
    with torch.no_grad():  # a non-zero head, as after training
        model.causal_lm.get_output_embeddings().weight[model.token_ids.rank_score].normal_(std=1.0)
    return model


def make_reader(model, **config):
    return RearReader(ReaderConfig(dtype="float32", max_new_tokens=MAX_NEW, **config), model,
                      device="cpu")


def reference_answer(model, text, question, judgment):
    """`generate` on the unpadded prompt + judgment token, control tokens suppressed."""
    prompt = build_rear_input(model.tokenizer, text, question,
                              use_chat_template=model.config.use_chat_template).prompt_ids
    ids = torch.tensor([prompt + [model.token_ids.judgment(judgment)]])
    out = model.causal_lm.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                   max_new_tokens=MAX_NEW,
                                   suppress_tokens=model.suppressed_token_ids(include_judgments=True),
                                   pad_token_id=model.tokenizer.pad_token_id)
    return first_line(model.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))


def reference_confidence(model, text, question, answer):
    """con of `answer` by a full forward of `{passage}...<GENERATE_SCORE><IRRELEVANT>{answer}`."""
    x = build_rear_input(model.tokenizer, text, question, "irrelevant", answer, add_eos=False,
                         noise_resistant=True, use_chat_template=model.config.use_chat_template)
    batch = collate_rear_inputs([x], model.tokenizer.pad_token_id)
    with torch.no_grad():
        out = model(batch["input_ids"], batch["attention_mask"])
    label_mask = torch.tensor([x.label_mask])
    # Prompt control tokens have log-prob -inf under the mask: zero them before the masked mean.
    logprobs = token_logprobs(out.lm_logits, batch["input_ids"]).masked_fill(~label_mask, 0.0)
    return float(answer_confidence(logprobs, label_mask)[0])


def test_answers_match_generate_under_each_judgment():
    model = make_model(chat=True)  # the chat format: the other tests use the plain one
    reader = make_reader(model)
    for force in ("relevant", "irrelevant"):
        readings = reader.read(QUESTIONS, PASSAGES, force=force, closed_book=True)
        for question, passages, reading in zip(QUESTIONS, PASSAGES, readings):
            assert reading.judgments == [force] * len(passages)
            assert reading.answers == [reference_answer(model, passage_text(p, 150), question, force)
                                       for p in passages]
            assert reading.closed_book == reference_answer(model, "", question, "irrelevant")


@pytest.mark.parametrize("chat,question_first", [(False, False), (True, False), (False, True),
                                                 (True, True)])
def test_batched_prompts_equal_build_rear_input(chat, question_first):
    from rearqa.reader.rear.prompting import MAX_PASSAGE_TOKENS, MAX_QUESTION_TOKENS, PromptBuilder

    tok = tiny_tokenizer()
    model = RearModel.from_base(tiny_llama(len(tok)), tok, RearConfig(use_chat_template=chat))
    texts = [*TEXTS, "", "the city " * 150]  # empty (closed-book row) and cut to 200 tokens
    questions = [QUESTIONS[0], "who " * 80]  # the second cut to 64 tokens
    rows = [0, 1, 0, 1, 0, 1]
    built = PromptBuilder(model.tokenizer, chat, question_first).build(texts, questions, rows)
    for text, qi, got in zip(texts, rows, built):
        want = build_rear_input(model.tokenizer, text, questions[qi], use_chat_template=chat,
                                max_passage_tokens=MAX_PASSAGE_TOKENS,
                                max_question_tokens=MAX_QUESTION_TOKENS,
                                question_first=question_first)
        assert got == want


def test_question_first_checkpoint_is_read_question_first(tmp_path):
    """A question-first model keeps its layout through save and load, and its reader scores
    what the model scores on question-first prompts (not on passage-first ones)."""
    model = make_model(question_first=True)
    model.save_pretrained(tmp_path / "ck")
    loaded = RearModel.from_pretrained(tmp_path / "ck", dtype=torch.float32)
    assert loaded.config.question_first
    reader = make_reader(loaded)
    passage_first = make_model()
    for question, passages, reading in zip(QUESTIONS, PASSAGES, reader.read(QUESTIONS, PASSAGES)):
        texts = [passage_text(p, 150) for p in passages]
        assert torch.allclose(torch.tensor(reading.scores), loaded.score_texts(question, texts), atol=1e-5)
        assert not torch.allclose(torch.tensor(reading.scores),
                                  passage_first.score_texts(question, texts), atol=1e-3)


@pytest.mark.parametrize("head", ["linear", "lowrank_attn"])
def test_scores_are_the_models_scores(head):
    model = make_model(head=head)
    reader = make_reader(model)
    for question, passages, reading in zip(QUESTIONS, PASSAGES, reader.read(QUESTIONS, PASSAGES)):
        expected = model.score_texts(question, [passage_text(p, 150) for p in passages])
        assert torch.allclose(torch.tensor(reading.scores), expected, atol=1e-5)


def test_read_batch_shapes_and_citations():
    reader = make_reader(make_model())
    answers = reader.read_batch(QUESTIONS, PASSAGES)
    assert len(answers) == 2
    for answer, passages in zip(answers, PASSAGES):
        assert answer.method == "rear" and not answer.abstained
        assert [c.passage.id for c in answer.citations] == [p.id for p in passages]
        for c in answer.citations:
            assert isinstance(c.relevance, float)
            assert c.judgment in ("relevant", "irrelevant") and isinstance(c.answer, str)
    with pytest.raises(ValueError, match="rear"):
        reader.read_batch(QUESTIONS, PASSAGES, method="rag")


def test_judgments_follow_the_threshold_and_condition_the_answer():
    model = make_model()
    scores = make_reader(model).read(QUESTIONS[:1], PASSAGES[:1])[0].scores
    threshold = sorted(scores)[1]  # two passages above, two at or below
    reader = make_reader(model, routing="path_reliability")
    reader.routing.threshold = threshold
    answer = reader.read_batch(QUESTIONS[:1], PASSAGES[:1])[0]
    judged = [c.judgment for c in answer.citations]
    assert judged == ["relevant" if s > threshold else "irrelevant" for s in scores]
    assert judged.count("relevant") == 2
    for c in answer.citations:
        assert c.answer == reference_answer(model, c.passage.text, QUESTIONS[0], c.judgment)
    best = max(range(4), key=lambda i: scores[i])
    assert answer.text == answer.citations[best].answer and not answer.from_own_knowledge
    assert answer.cited == [best]  # the passage routing chose, and only it


def test_one_scoring_forward_for_all_passages():
    model = make_model()
    reader = make_reader(model, fallback="abstain", routing="path_reliability")
    shapes = []
    hook = model.causal_lm.get_decoder().register_forward_hook(
        lambda module, args, kwargs, out: shapes.append(tuple(kwargs["input_ids"].shape)),
        with_kwargs=True)
    try:
        reader.read_batch(QUESTIONS[:1], PASSAGES[:1])
    finally:
        hook.remove()
    prefills = [s for s in shapes if s[1] > 1]
    assert len(prefills) == 1 and prefills[0][0] == len(PASSAGES[0])  # k rows, one forward
    assert shapes[0] == prefills[0]  # scoring comes first; the rest are 1-token decode steps
    assert 1 <= len(shapes) - 1 <= MAX_NEW


def test_knowledge_consistency_confidences_in_one_forward():
    model = make_model()
    reader = make_reader(model, routing="knowledge_consistency")
    reader.routing.threshold = -1e9  # everything relevant: every passage needs a confidence
    shapes = []
    hook = model.causal_lm.get_decoder().register_forward_hook(
        lambda module, args, kwargs, out: shapes.append(tuple(kwargs["input_ids"].shape)),
        with_kwargs=True)
    try:
        reading = reader.read(QUESTIONS[:1], PASSAGES[:1])[0]
    finally:
        hook.remove()
    k = len(PASSAGES[0])
    assert [s[0] for s in shapes if s[1] > 1] == [k + 1, k]  # scoring (+ closed-book row), con
    expected = [reference_confidence(model, passage_text(p, 150), QUESTIONS[0], a)
                for p, a in zip(PASSAGES[0], reading.answers)]
    assert reading.confidences == pytest.approx(expected, abs=1e-5)
    answer = reader.answer(QUESTIONS[0], PASSAGES[0], reading)
    combined = [s + 9.0 * c for s, c in zip(reading.scores, reading.confidences)]
    chosen = max(range(k), key=lambda i: (combined[i], -i))
    assert answer.text == reading.answers[chosen] and answer.cited == [chosen]


def test_confidences_only_for_relevant_passages():
    model = make_model()
    scores = make_reader(model).read(QUESTIONS[:1], PASSAGES[:1])[0].scores
    reader = make_reader(model, routing="knowledge_consistency")
    reader.routing.threshold = sorted(scores)[2]  # one passage above
    reading = reader.read(QUESTIONS[:1], PASSAGES[:1])[0]
    assert [c is not None for c in reading.confidences] == [s > reader.routing.threshold
                                                             for s in scores]


def test_closed_book_fallback_answers_from_own_knowledge():
    model = make_model()
    reader = make_reader(model, fallback="closed_book")
    reader.routing.threshold = 1e9
    answers = reader.read_batch(QUESTIONS, PASSAGES)
    for question, answer in zip(QUESTIONS, answers):
        assert answer.from_own_knowledge and not answer.abstained and answer.cited == []
        assert answer.text == reference_answer(model, "", question, "irrelevant")
        assert {c.judgment for c in answer.citations} == {"irrelevant"}
        assert all(c.answer is not None for c in answer.citations)


def test_abstain_fallback_and_no_passages():
    reader = make_reader(make_model(), fallback="abstain")
    reader.routing.threshold = 1e9
    answers = reader.read_batch([*QUESTIONS, "who wrote hamlet ?"], [*PASSAGES, []])
    assert all(a.abstained and a.text == "" and not a.from_own_knowledge for a in answers)
    assert all(a.cited == [] for a in answers)  # a withheld answer cites nothing
    assert answers[2].citations == []
    reader.routing.fallback = "closed_book"
    assert reader.read_batch(["who wrote hamlet ?"], [[]])[0].from_own_knowledge


def test_routing_and_fallback_override_the_checkpoint():
    model = make_model(routing=RoutingConfig(method="path_reliability", threshold=2.5, gamma=3.0))
    reader = make_reader(model, routing="knowledge_consistency", fallback="abstain")
    assert (reader.routing.method, reader.routing.fallback) == ("knowledge_consistency", "abstain")
    assert (reader.routing.threshold, reader.routing.gamma) == (2.5, 3.0)
    assert make_reader(model).routing == model.config.routing


def test_stream_yields_the_pieces_then_what_read_returns():
    reader = make_reader(make_model())
    expected = reader.read_batch(QUESTIONS[:1], PASSAGES[:1])[0]
    *pieces, answer = list(reader.stream(QUESTIONS[0], PASSAGES[0]))
    assert all(isinstance(p, str) for p in pieces)
    assert "".join(pieces) == expected.text
    assert answer.to_dict() == expected.to_dict()
    assert not hasattr(reader, "_last")  # nothing parked on the reader between calls


def test_batch_size_does_not_change_answers():
    model = make_model()
    one = make_reader(model, batch_size=1).read_batch(QUESTIONS, PASSAGES)
    two = make_reader(model, batch_size=2).read_batch(QUESTIONS, PASSAGES)
    for a, b in zip(one, two):  # padding changes the scores by float rounding only
        assert (a.text, [c.answer for c in a.citations]) == (b.text, [c.answer for c in b.citations])
        assert [c.relevance for c in a.citations] == pytest.approx([c.relevance for c in b.citations],
                                                                   abs=1e-5)


def test_config_registry_and_checkpoint_resolution(tmp_path):
    for bad in ({"routing": "best"}, {"fallback": "guess"}, {"method": "rear2"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            ReaderConfig(**bad)
    assert get_reader_class("rear") is RearReader
    with pytest.raises(ValueError, match="valid methods"):
        get_reader_class("self-rag")
    with pytest.raises(ConfigError, match="not a REAR checkpoint"):
        resolve_checkpoint(ReaderConfig(checkpoint=str(tmp_path)))
    with pytest.raises(ConfigError, match="not a REAR checkpoint"):
        build_reader("rear", ReaderConfig(checkpoint=str(tmp_path / "none")), tmp_path)
    with pytest.raises(ConfigError, match="reader.adapter"):  # none shipped for closed-book-ft
        resolve_adapter(ReaderConfig(method="closed-book-ft"))
    # rag-ft's adapter ships beside the REAR checkpoint (docs/rear.md): the default when none is named
    assert resolve_adapter(ReaderConfig(method="rag-ft")) == default_checkpoint_dir().parent / "rag-ft-smollm2"
    with pytest.raises(ConfigError, match="no adapter_config.json"):
        resolve_adapter(ReaderConfig(method="rag-ft", adapter=str(tmp_path)))


def test_finetuned_reader_merges_the_adapter(tmp_path):
    from peft import LoraConfig, get_peft_model

    from rearqa.reader.finetuned import DeviceHFEngine, FinetunedReader

    tok = tiny_tokenizer()
    base = tiny_llama(len(tok), seed=1)
    base.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))  # a non-zero delta
    peft_model.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([tok("who wrote hamlet ?")["input_ids"]])
    with torch.no_grad():
        expected = peft_model(ids).logits
    engine = DeviceHFEngine(tmp_path / "base", "float32", device="cpu", adapter=tmp_path / "adapter")
    with torch.no_grad():
        assert torch.allclose(engine.model(ids).logits, expected, atol=1e-5)
    config = ReaderConfig(dtype="float32", max_new_tokens=3, method="rag-ft")
    reader = FinetunedReader(config, tmp_path / "base", engine=engine)
    rag, closed = (reader.read_batch(QUESTIONS[:1], PASSAGES[:1], m)[0]
                   for m in ("rag-ft", "closed-book-ft"))
    assert rag.method == "rag-ft" and len(rag.citations) == len(PASSAGES[0])
    assert closed.method == "closed-book-ft" and closed.from_own_knowledge and not closed.citations
    with pytest.raises(ValueError, match="rag-ft"):
        reader.read_batch(QUESTIONS[:1], PASSAGES[:1], "rear")

    # A pipeline whose reader.method is another method builds each fine-tuned reader for its own
    # method (its adapter is that method's), one per method.
    from rearqa.config import PipelineConfig
    from rearqa.pipeline import Pipeline

    pipe = Pipeline(PipelineConfig(reader=ReaderConfig(
        method="rag", dtype="float32", max_new_tokens=3, model=str(tmp_path / "base"),
        adapter=str(tmp_path / "adapter"))), home=tmp_path / "home")
    rag_ft, closed_ft = pipe.reader_for("rag-ft"), pipe.reader_for("closed-book-ft")
    assert rag_ft is not closed_ft and rag_ft is pipe.reader_for("rag-ft")
    assert (rag_ft.config.method, closed_ft.config.method) == ("rag-ft", "closed-book-ft")
    assert pipe.read_batch(QUESTIONS[:1], PASSAGES[:1], "rag-ft")[0].method == "rag-ft"


def test_saved_eos_names_the_token_an_adapter_trained_to_end_with(tmp_path):
    from rearqa.reader.engines import saved_eos_id

    tok = tiny_tokenizer()
    assert saved_eos_id(tok, tmp_path) is None  # no tokenizer config saved there
    token = tok.convert_ids_to_tokens(5)
    (tmp_path / "tokenizer_config.json").write_text(f'{{"eos_token": "{token}"}}')
    assert saved_eos_id(tok, tmp_path) == 5
    (tmp_path / "tokenizer_config.json").write_text('{"eos_token": {"content": "%s"}}' % token)
    assert saved_eos_id(tok, tmp_path) == 5


@pytest.mark.slow
def test_shipped_rag_ft_answers_stop_where_its_training_ended_them(reader_dir):
    """The shipped rag-ft adapter was trained where the converted tokenizer's eos was
    <|im_start|> (its saved tokenizer_config.json says so), not <|im_end|> as here: its answers
    must stop there rather than run on into "user" turns."""
    from rearqa.reader.config import default_adapter_dir
    from rearqa.reader.finetuned import DeviceHFEngine, FinetunedReader

    engine = DeviceHFEngine(reader_dir, "float32", threads=2, device="cpu",
                            adapter=default_adapter_dir("rag-ft"))
    assert engine.tokenizer.convert_tokens_to_ids("<|im_start|>") in engine._eos_ids()
    reader = FinetunedReader(ReaderConfig(method="rag-ft", max_new_tokens=16, dtype="float32"),
                             reader_dir, engine=engine)
    passages = [Passage(id="p", title="Paris", text="Paris is the capital of France."),
                Passage(id="h", title="Hamlet", text="Hamlet is a tragedy by William Shakespeare.")]
    answers = reader.read_batch(["What is the capital of France?", "Who wrote Hamlet?"],
                                [passages, passages])
    for answer in answers:
        assert "user" not in answer.text and 0 < len(answer.text.split()) <= 4, answer.text


@pytest.mark.slow
def test_untrained_wrapper_on_smollm2_falls_back_to_closed_book(reader_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(reader_dir)
    lm = AutoModelForCausalLM.from_pretrained(reader_dir, dtype=torch.float32)
    model = RearModel.from_base(lm, tok, RearConfig(use_chat_template=True), base_model_dir=reader_dir)
    reader = RearReader(ReaderConfig(max_new_tokens=12, fallback="closed_book"), model, device="cpu")
    passages = [Passage(id="h", title="Hamlet", text="Hamlet is a tragedy by William Shakespeare."),
                Passage(id="p", title="Paris", text="Paris is the capital of France.")]
    answer = reader.read_batch(["Who wrote Hamlet?"], [passages])[0]
    assert [c.relevance for c in answer.citations] == [0.0, 0.0]  # <RANK_SCORE> row starts at 0
    assert [c.judgment for c in answer.citations] == ["irrelevant"] * 2  # 0 is not > 0
    assert answer.from_own_knowledge and answer.text and not answer.abstained


def test_pipeline_dispatches_by_method_and_keeps_one_reader_per_class(tmp_path):
    from rearqa.config import PipelineConfig
    from rearqa.pipeline import Pipeline

    model = make_model()
    model.save_pretrained(tmp_path / "rear")
    config = ReaderConfig(dtype="float32", max_new_tokens=MAX_NEW, checkpoint=str(tmp_path / "rear"),
                          model=str(tmp_path / "unused-base"), fallback="abstain")
    pipe = Pipeline(PipelineConfig(reader=config), home=tmp_path / "home")
    answers = pipe.read_batch(QUESTIONS, PASSAGES, method="rear")
    assert [a.method for a in answers] == ["rear", "rear"]
    assert pipe.reader_for("rear") is pipe.reader_for("rear")
    assert isinstance(pipe.reader_for("rear"), RearReader)


# --- SpAtten (reader.backbone) over REAR: at full budgets it reads as the unpruned reader; with
# pruning the rank head judges the pruned attention, and the confidence pass continues the prompts
# from what the prefill pruned, not from what the greedy answers' decode pruned after it.

def spatten_reader(backbone: str = "") -> RearReader:
    reader = RearReader(ReaderConfig(dtype="float32", max_new_tokens=MAX_NEW, backbone=backbone,
                                     routing="knowledge_consistency"), make_model(), device="cpu")
    reader.routing.threshold = -1e9  # every passage relevant: every row needs a confidence
    return reader


def test_spatten_at_full_budgets_reads_as_the_unpruned_reader():
    plain = spatten_reader().read(QUESTIONS, PASSAGES)
    full = spatten_reader("spatten:start_layer=1").read(QUESTIONS, PASSAGES)
    for a, b in zip(plain, full):
        assert a.answers == b.answers
        assert a.scores == pytest.approx(b.scores, abs=1e-4)
        assert a.confidences == pytest.approx(b.confidences, abs=1e-4)


def test_spatten_pruned_scores_move_and_confidences_continue_from_the_prefill():
    budgets = "spatten:tokens=0.5,start_layer=1,recent=2"
    reader = spatten_reader(budgets)
    assert reader.backbone.startswith("spatten:tokens=0.5")
    readings = reader.read(QUESTIONS[:1], PASSAGES[:1])
    plain = spatten_reader().read(QUESTIONS[:1], PASSAGES[:1])
    assert readings[0].scores != pytest.approx(plain[0].scores, abs=1e-6)

    # The same confidences straight after the prefill, with no greedy decode in between.
    owners, inputs = reader._layout(QUESTIONS[:1], PASSAGES[:1], False)
    batch = collate_rear_inputs(inputs, reader.pad_id, padding_side="left")
    rows = list(range(len(owners)))
    with torch.inference_mode():
        _, cache = reader.score_with_cache(batch, rows)
        saved = reader._saved_pruning()
        reader._restore_pruning(saved, rows)
        direct = reader._confidences(cache, batch["attention_mask"], readings[0].answers)
    assert readings[0].confidences == pytest.approx(direct, abs=1e-6)


def test_spatten_prefill_0_keeps_the_rank_heads_scores_and_prunes_the_answers_decode():
    """prefill=0: the scoring prefill reads every passage token, so the rank head's scores are the
    full budget's exactly; the answers' decode is pruned (decode FLOPs below the dense count)."""
    budgets = "spatten:tokens=0.5,start_layer=1,recent=2"
    full = spatten_reader("spatten:start_layer=1").read(QUESTIONS, PASSAGES)
    late = spatten_reader(budgets + ",prefill=0").read(QUESTIONS, PASSAGES)
    pruned = spatten_reader(budgets).read(QUESTIONS, PASSAGES)
    for a, b, c in zip(full, late, pruned):
        assert a.scores == b.scores and b.scores != pytest.approx(c.scores, abs=1e-6)
        assert b.cost["prefill_flops"] == pytest.approx(b.cost["prefill_dense_flops"])
        assert b.cost["decode_flops"] < b.cost["decode_dense_flops"]


def test_spatten_cost_sums_each_questions_rows():
    """Each reading carries SpAtten's counters summed over its passage rows: the prompt tokens
    are the rows' lengths, pruning spends fewer attention FLOPs than the dense count, and a
    full budget spends exactly the dense count. Without a backbone there is no cost."""
    from rearqa.eval.backbone_cost import cost_summary

    assert all(not r.cost for r in spatten_reader().read(QUESTIONS, PASSAGES))
    reader = spatten_reader("spatten:tokens=0.5,start_layer=1,recent=2")
    readings = reader.read(QUESTIONS, PASSAGES)
    owners, inputs = reader._layout(QUESTIONS, PASSAGES, reader.routing.fallback == "closed_book")
    for qi, reading in enumerate(readings):
        lengths = [len(inputs[r].input_ids) for r, (q, _) in enumerate(owners) if q == qi]
        assert reading.cost["prompt_tokens"] == sum(lengths)
        assert 0 < reading.cost["pruned_prompt_tokens"] < sum(lengths)
        assert reading.cost["prefill_flops"] < reading.cost["prefill_dense_flops"]
        assert reading.cost["decode_flops"] < reading.cost["decode_dense_flops"]
        assert reading.cost["linear_flops_per_token"] > 0
    summary = cost_summary([{"backbone_cost": r.cost} for r in readings])
    assert 0 < summary["prefill_attention_flops_ratio"] < 1
    full = spatten_reader("spatten:start_layer=1").read(QUESTIONS, PASSAGES)
    for reading in full:
        assert reading.cost["prefill_flops"] == pytest.approx(reading.cost["prefill_dense_flops"])
        assert reading.cost["pruned_prompt_tokens"] == 0


def test_the_backbone_label_names_spatten_for_rear(tmp_path):
    from rearqa.config import PipelineConfig
    from rearqa.pipeline import Pipeline

    make_model().save_pretrained(tmp_path / "rear")
    config = ReaderConfig(dtype="float32", max_new_tokens=MAX_NEW, checkpoint=str(tmp_path / "rear"),
                          model=str(tmp_path / "unused-base"), backbone="spatten:tokens=0.5,start_layer=1")
    pipe = Pipeline(PipelineConfig(reader=config), home=tmp_path / "home")
    answer = pipe.read_batch(QUESTIONS[:1], PASSAGES[:1], method="rear")[0]
    assert "spatten:tokens=0.5" in answer.backbone
    assert answer.backbone_cost["prompt_tokens"] > 0  # what an eval row and report.json sum
