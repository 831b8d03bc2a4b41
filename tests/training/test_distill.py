"""The distill task on a tiny Llama converted with TransMLA at a low rank (`world`, conftest.py):
the KL is 0 for an equal student and the same chunked or not, training lowers it and moves only
the chosen parameters, the saved result loads back by path, and a run resumes. A REAR student
(a tiny REAR checkpoint converted the same way) against its REAR teacher: the rank MSE is 0 for
an equal student, training lowers it (the KL alone does not) and leaves the head and rows, the
saved result loads back as a REAR reader with the trained rank logits, and a teacher of the
other kind is refused."""
import json
from pathlib import Path

import pytest
import torch

from rearqa.config_errors import ConfigError
from rearqa.reader.backbone.loading import load_causal_lm
from rearqa.training.config import TrainConfig
from rearqa.training.distill_task import attention_part
from rearqa.training.losses import chunked_kl_sum
from rearqa.training.train import build_task, make_optimizer, train


@pytest.fixture(scope="module")
def student(world):
    """The tiny base converted with TransMLA to a 4-wide latent + 4 rotary dims (cap: 12),
    exported with its tokenizer as `rearqa convert` writes it."""
    from transformers import AutoTokenizer

    from rearqa.reader.backbone import get_transform
    from rearqa.reader.backbone.transmla.config import TransMLAConfig

    base = world / "base"
    out = world / "student"
    if not out.is_dir():
        transform = get_transform("transmla")
        cfg = TransMLAConfig(kv_lora_rank=4, rope_dim=4, calib_passages=4, calib_tokens=16)
        lm = load_causal_lm(base, torch.float32).eval()
        calib = torch.randint(6, lm.config.vocab_size, (4, 16), generator=torch.Generator().manual_seed(0))
        converted = transform.apply(lm, calib, cfg)
        transform.export(converted, out, cfg, source={"kind": "base", "path": str(base)})
        AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


def config(world, student_dir, out, **kw):
    base = dict(method="distill", base_model=str(world / "base"), student=str(student_dir),
                teacher="base", snapshot=str(world / "snapshot"), splits=["nq-dev-train"],
                out=str(world / out), depth=4, batch=4, grad_accum=1, steps=4, lora_r=4,
                lora_alpha=8, lora_dropout=0.0, lr=5e-3, save_every=2, max_answer_tokens=5,
                rag_k=2, max_passage_words=20, distill_max_len=12, corpus_windows=6, kd_chunk=7,
                warmup_ratio=0.0, threads=1, device="cpu", distill_trainable="lora")
    return TrainConfig(**{**base, **kw})


def fixed_batch(task, n=6):
    return task.batch(list(range(min(n, task.n_items))), torch.device("cpu"))


def test_kl_is_zero_when_the_student_is_the_teacher(world):
    task = build_task(config(world, world / "base", "same", distill_trainable="attention"),
                      torch.device("cpu"))
    assert task.stats["corpus_rows"] > 0 and task.stats["prompt_rows"] == 4
    with torch.no_grad():
        kl = task.kl(fixed_batch(task))
    assert abs(kl.item()) < 1e-6


def test_the_chunked_kl_equals_the_unchunked_one():
    torch.manual_seed(0)
    s, t = torch.randn(23, 8, requires_grad=True), torch.randn(23, 8)
    head_s, head_t = torch.nn.Linear(8, 50, bias=False), torch.nn.Linear(8, 50, bias=False)
    whole = chunked_kl_sum(s, t, head_s, head_t, 2.0, chunk=1000)
    pieces = chunked_kl_sum(s, t, head_s, head_t, 2.0, chunk=5)
    logp_s = torch.log_softmax(head_s(s) / 2.0, -1)
    logp_t = torch.log_softmax(head_t(t) / 2.0, -1)
    direct = (logp_t.exp() * (logp_t - logp_s)).sum() * 4.0
    torch.testing.assert_close(whole, direct.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pieces, whole, rtol=1e-5, atol=1e-5)
    g_whole = torch.autograd.grad(whole, s)[0]
    g_pieces = torch.autograd.grad(chunked_kl_sum(s, t, head_s, head_t, 2.0, chunk=5), s)[0]
    torch.testing.assert_close(g_pieces, g_whole, rtol=1e-5, atol=1e-6)


def train_steps(task, cfg, steps):
    opt = make_optimizer(task, cfg)
    batch = fixed_batch(task)
    task.model.train()
    for _ in range(steps):
        loss = task.losses(batch, "distill")["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad()
    task.model.eval()
    with torch.no_grad():
        return task.kl(batch).item()


def new_part(name: str) -> bool:
    from rearqa.training.distill_task import NEW_MLA_PROJECTIONS

    return attention_part(name) in NEW_MLA_PROJECTIONS


@pytest.mark.parametrize("which", ["attention", "lora", "new"])
def test_training_lowers_the_kl_and_moves_only_the_chosen_parameters(world, student, which):
    torch.manual_seed(0)
    cfg = config(world, student, f"fixed-{which}", distill_trainable=which)
    task = build_task(cfg, torch.device("cpu"))
    before_params = {n: p.detach().clone() for n, p in task.model.named_parameters()}
    with torch.no_grad():
        before = task.kl(fixed_batch(task)).item()
    assert before > 1e-3  # a rank-4 latent is far from the teacher
    after = train_steps(task, cfg, 8)
    assert after < 0.9 * before
    changed = {n for n, p in task.model.named_parameters() if not torch.equal(p, before_params[n])}
    assert changed
    if which == "lora":
        assert all("lora_" in n for n in changed)
        # the dense MLP too (PEFT's MoE remap kept off, rearqa.reader.adapters.peft_compat)
        assert {"q_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "gate_proj", "up_proj",
                "down_proj"} <= set(task.stats["lora_modules"])
    elif which == "attention":
        assert all(attention_part(n) is not None for n in changed)
    else:
        assert all(new_part(n) for n in changed)
        assert not any(attention_part(n) == "o_proj" for n in changed)
    assert not any("embed_tokens" in n or ("mlp" in n and "lora_" not in n) for n in changed)
    assert all(not p.requires_grad for p in task.teacher.parameters())


@pytest.mark.parametrize("which", ["attention", "lora"])
def test_the_saved_result_loads_back_and_gives_the_trained_logits(world, student, tmp_path, which):
    torch.manual_seed(0)
    cfg = config(world, student, f"save-{which}", distill_trainable=which)
    task = build_task(cfg, torch.device("cpu"))
    train_steps(task, cfg, 3)
    task.save_model(tmp_path / "saved")
    ids = fixed_batch(task).chunks[0].input_ids
    with torch.no_grad():
        expected = task.student(input_ids=ids).logits
        if which == "lora":
            from rearqa.reader.finetuned import merge_lora

            loaded = merge_lora(load_causal_lm(student, torch.float32), tmp_path / "saved")
        else:
            loaded = load_causal_lm(tmp_path / "saved")
            manifest = json.loads((tmp_path / "saved" / "backbone.json").read_text())
            assert manifest["transform"] == "transmla"
            assert manifest["source"]["distilled"]["trainable"] == which
        got = loaded.eval()(input_ids=ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert (tmp_path / "saved" / "distill.json").is_file()


def test_a_run_resumes_where_it_stopped(world, student):
    cfg = config(world, student, "resume", distill_trainable="new", steps=4, save_every=2)
    train(cfg, stop_after_steps=2, echo=lambda *_: None)
    final = train(cfg, echo=lambda *_: None)
    whole = config(world, student, "whole", distill_trainable="new", steps=4, save_every=2)
    train(whole, echo=lambda *_: None)
    logs = [[json.loads(l) for l in (Path(c.out) / "train_log.jsonl").read_text().splitlines()]
            for c in (cfg, whole)]
    assert [r["step"] for r in logs[0]] == [1, 2, 3, 4]
    for a, b in zip(*logs):
        assert a["lm"] == pytest.approx(b["lm"], rel=1e-4, abs=1e-6)
        assert a["stage"] == "distill" and a["rank"] == 0.0
    assert logs[0][-1]["lm"] < logs[0][0]["lm"]
    assert (final / "backbone.json").is_file() and load_causal_lm(final) is not None


def test_bad_settings_are_refused(world, student, tmp_path):
    with pytest.raises(ConfigError, match="distill_trainable"):
        config(world, student, "x", distill_trainable="mlp")
    with pytest.raises(ConfigError, match="distill_data"):
        config(world, student, "x", distill_data=["test"])
    with pytest.raises(ConfigError, match="student is empty"):
        config(world, "", "x")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(ConfigError, match="converted from a plain model"):
        build_task(config(world, student, "x", teacher=str(adapter)), torch.device("cpu"))


def test_the_cli_trains_a_student_by_path(world, student, tmp_path, config_yaml):
    from typer.testing import CliRunner

    from rearqa.app.train_cmd import train_app

    yaml_file = config_yaml(config(world, student, "unused").to_dict(), drop=(
        "method", "student", "teacher", "distill_trainable", "out", "steps"))
    out = tmp_path / "cli"
    done = CliRunner().invoke(train_app, [
        "distill", "--student", str(student), "--teacher", "base", "--trainable", "new",
        "-c", str(yaml_file), "--out", str(out), "--steps", "2", "--quiet"])
    assert done.exit_code == 0, done.output
    assert "final model" in done.output
    assert json.loads((out / "train_config.json").read_text())["distill_trainable"] == "new"
    assert load_causal_lm(out / "final") is not None


@pytest.mark.parametrize("name", ["distill.yaml", "distill-gpu.yaml", "distill-heal.yaml"])
def test_the_shipped_configs_parse(name):
    cfg = TrainConfig.from_yaml(Path(__file__).parents[2] / "configs" / "train" / name,
                                student="readers/mla96")
    assert cfg.method == "distill" and cfg.distill_data == ["corpus", "prompts"]
    assert cfg.token_budget > 0 or cfg.total_steps == cfg.steps
    assert all(split.endswith("-dev-train") for split in cfg.splits)


def test_an_adapter_teacher_is_merged_into_the_base(world, tmp_path):
    """A teacher given as a PEFT adapter is the base with it merged: the merged model saved as
    the student gives KL 0, the plain base as the student does not."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    torch.manual_seed(1)
    lm = load_causal_lm(world / "base", torch.float32)
    peft = get_peft_model(lm, LoraConfig(r=2, lora_alpha=4, target_modules="all-linear"))
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # non-identity: B starts at zero
    peft.save_pretrained(tmp_path / "adapter")
    merged = peft.merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    AutoTokenizer.from_pretrained(world / "base").save_pretrained(tmp_path / "merged")
    kls = {}
    for name, student_dir in (("merged", tmp_path / "merged"), ("base", world / "base")):
        task = build_task(config(world, student_dir, f"adapter-{name}", teacher=str(tmp_path / "adapter"),
                                 distill_trainable="attention"), torch.device("cpu"))
        with torch.no_grad():
            kls[name] = task.kl(fixed_batch(task)).item()
    assert abs(kls["merged"]) < 1e-5 and kls["base"] > 1e-3


# ---------------------------------------------------------------------------- REAR students

@pytest.fixture(scope="module")
def rear_teacher(world):
    """A REAR checkpoint on the tiny base (plain kind), its <RANK_SCORE> row drawn at random so
    that the rank logits are far from 0 and differ between passages."""
    from transformers import AutoTokenizer

    from rearqa.reader.rear.model import RearModel

    out = world / "rear-teacher"
    if not out.is_dir():
        lm = load_causal_lm(world / "base", torch.float32)
        rear = RearModel.from_base(lm, AutoTokenizer.from_pretrained(world / "base"),
                                   base_model_dir=world / "base")
        row = torch.randn(lm.config.hidden_size, generator=torch.Generator().manual_seed(3))
        rear.set_output_row(rear.token_ids.rank_score, row)
        rear.save_pretrained(out)
    return out


def convert_rear(teacher_dir, out):
    """The REAR checkpoint `teacher_dir` converted as `rearqa convert --from` it writes it
    (convert_cmd.load_source, convert_reader): TransMLA at rank 4 + 4 rotary dims,
    backbone.json, the REAR files."""
    from rearqa.reader.backbone import get_transform
    from rearqa.reader.backbone.transmla.config import TransMLAConfig
    from rearqa.reader.rear.checkpoint import write_rear_files
    from rearqa.reader.rear.model import RearModel

    if not out.is_dir():
        rear = RearModel.from_pretrained(teacher_dir, dtype=torch.float32)
        transform = get_transform("transmla")
        cfg = TransMLAConfig(kv_lora_rank=4, rope_dim=4, calib_passages=4, calib_tokens=16)
        calib = torch.randint(6, 40, (4, 16), generator=torch.Generator().manual_seed(0))
        converted = transform.apply(rear.causal_lm.eval(), calib, cfg)
        transform.export(converted, out, cfg, source={"kind": "rear", "path": str(teacher_dir)})
        rear.tokenizer.save_pretrained(out)
        write_rear_files(rear, converted, out)
    return out


@pytest.fixture(scope="module")
def rear_student(world, rear_teacher):
    return convert_rear(rear_teacher, world / "rear-student")


def rear_config(world, student_dir, teacher_dir, out, **kw):
    return config(world, student_dir, out, teacher=str(teacher_dir), group_size=3,
                  distill_trainable=kw.pop("distill_trainable", "attention"), **kw)


def all_rows(task):
    return task.batch(list(range(task.n_items)), torch.device("cpu"))


def test_the_rank_mse_is_zero_when_the_rear_student_is_its_teacher(world, rear_teacher):
    task = build_task(rear_config(world, rear_teacher, rear_teacher, "rear-same"),
                      torch.device("cpu"))
    assert task.stats["rear_rows"] == 12 and task.stats["prompt_rows"] == 0
    assert task.stats["corpus_rows"] > 0 and task.stats["rank_head"] == "linear"
    batch = all_rows(task)
    with torch.no_grad():
        kl, mse = task.distances(batch)
        scores = task.student_rear.score_texts("who wrote hamlet ?", ["hamlet is a tragedy .",
                                                                      "paris is a city ."])
    assert abs(kl.item()) < 1e-6 and mse.item() < 1e-10
    assert scores.abs().min() > 1e-2 and (scores[0] - scores[1]).abs() > 1e-3  # a real head
    assert task.losses(batch, "distill")["rank"].item() < 1e-10


def rear_train_steps(task, cfg, steps):
    opt = make_optimizer(task, cfg)
    batch = all_rows(task)
    task.model.train()
    for _ in range(steps):
        task.losses(batch, "distill")["loss"].backward()
        opt.step()
        opt.zero_grad()
    task.model.eval()
    with torch.no_grad():
        return task.distances(batch)


@pytest.mark.parametrize("which", ["attention", "lora"])
def test_training_lowers_the_rank_mse_and_leaves_the_head_and_rows(world, rear_teacher,
                                                                   rear_student, which):
    torch.manual_seed(0)
    cfg = rear_config(world, rear_student, rear_teacher, f"rear-fixed-{which}",
                      distill_trainable=which)
    task = build_task(cfg, torch.device("cpu"))
    rank_row = task.student_rear.output_row(task.student_rear.token_ids.rank_score)
    embeddings = task.student.get_input_embeddings().weight.detach().clone()
    with torch.no_grad():
        kl_before, mse_before = task.distances(all_rows(task))
    assert mse_before.item() > 1e-3  # a rank-4 latent moves the rank logits
    kl_after, mse_after = rear_train_steps(task, cfg, 8)
    assert mse_after < 0.7 * mse_before and kl_after < kl_before
    torch.testing.assert_close(task.student_rear.output_row(task.student_rear.token_ids.rank_score),
                               rank_row, rtol=0, atol=0)
    torch.testing.assert_close(task.student.get_input_embeddings().weight, embeddings, rtol=0, atol=0)
    assert all(not p.requires_grad for p in task.teacher.parameters())


@pytest.mark.parametrize("which", ["new", "lora"])
def test_the_saved_rear_student_loads_back_with_its_trained_rank_logits(world, rear_teacher,
                                                                       rear_student, tmp_path,
                                                                       which):
    from rearqa.reader.backbone.manifest import read_manifest
    from rearqa.reader.rear.model import RearModel
    from rearqa.training.distill_result import merge_rear_student

    torch.manual_seed(0)
    cfg = rear_config(world, rear_student, rear_teacher, f"rear-save-{which}",
                      distill_trainable=which)
    task = build_task(cfg, torch.device("cpu"))
    passages = ["hamlet is a tragedy written by shakespeare .", "paris is the capital of france ."]
    untrained = task.student_rear.score_texts("who wrote hamlet ?", passages)
    rear_train_steps(task, cfg, 3)
    expected = task.student_rear.score_texts("who wrote hamlet ?", passages)
    assert (expected - untrained).abs().max() > 1e-4  # training moved them
    task.save_model(tmp_path / "saved")
    reader_dir = tmp_path / "saved"
    if which == "lora":  # the adapter, assembled with the student into a full REAR checkpoint
        reader_dir = merge_rear_student(rear_student, tmp_path / "saved", tmp_path / "merged")
    loaded = RearModel.from_pretrained(reader_dir)
    torch.testing.assert_close(loaded.score_texts("who wrote hamlet ?", passages), expected,
                               rtol=1e-4, atol=1e-4)
    manifest = read_manifest(reader_dir)
    assert manifest.transform == "transmla" and manifest.source["kind"] == "rear"
    assert manifest.source["distilled"]["trainable"] == which
    assert manifest.source["distilled"]["rank_mse_weight"] == 1.0


def test_a_teacher_of_the_other_kind_is_refused(world, student, rear_teacher, rear_student):
    with pytest.raises(ConfigError, match="give the REAR checkpoint it was converted from"):
        build_task(config(world, rear_student, "rear-x", teacher="base"), torch.device("cpu"))
    with pytest.raises(ConfigError, match="a REAR teacher heals a REAR student"):
        build_task(config(world, student, "rear-y", teacher=str(rear_teacher)), torch.device("cpu"))
    with pytest.raises(ConfigError, match="rank_mse_weight"):
        config(world, rear_student, "rear-z", rank_mse_weight=-1.0)


def test_the_vocabulary_kl_alone_barely_holds_the_rank_logit(world, rear_teacher, rear_student):
    """Issue 12's reason for the MSE: trained on the KL alone (rank_mse_weight 0), the new
    projections leave the rank logits far from the teacher's; with the MSE they follow them."""
    after = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        cfg = rear_config(world, rear_student, rear_teacher, f"rear-weight-{weight}",
                          distill_trainable="new", rank_mse_weight=weight)
        after[weight] = rear_train_steps(build_task(cfg, torch.device("cpu")), cfg, 8)[1].item()
    assert after[1.0] < 0.2 * after[0.0]


def test_a_rear_run_logs_the_rank_mse_and_ends_with_a_rear_reader(world, rear_teacher, rear_student):
    from rearqa.reader.rear.model import RearModel

    cfg = rear_config(world, rear_student, rear_teacher, "rear-run", distill_trainable="new",
                      steps=2, save_every=2)
    final = train(cfg, echo=lambda *_: None)
    log = [json.loads(l) for l in (Path(cfg.out) / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(r["rank"] > 0 for r in log)
    assert json.loads((Path(cfg.out) / "train_config.json").read_text())["rank_mse_weight"] == 1.0
    rear = RearModel.from_pretrained(final)
    assert torch.isfinite(rear.score_texts("who wrote hamlet ?", ["hamlet is a tragedy ."])).all()


def test_a_lowrank_attn_student_trains_with_its_head_frozen(world):
    """The lowrank_attn head (a module of its own, reading the passage masks) is distilled the
    same way: the rank MSE falls while the head's parameters stay the teacher's."""
    from transformers import AutoTokenizer

    from rearqa.reader.rear.config import RearConfig
    from rearqa.reader.rear.model import RearModel

    teacher_dir = world / "rear-lowrank-teacher"
    rear = RearModel.from_base(load_causal_lm(world / "base", torch.float32),
                               AutoTokenizer.from_pretrained(world / "base"),
                               RearConfig(head="lowrank_attn", lowrank_key_dim=8),
                               base_model_dir=world / "base")
    torch.manual_seed(2)
    with torch.no_grad():
        for param in rear.rank_head.parameters():
            param.normal_(std=0.5)  # non-identity: parts of the head start at zero
    rear.save_pretrained(teacher_dir)
    student_dir = convert_rear(teacher_dir, world / "rear-lowrank-student")
    torch.manual_seed(0)
    cfg = rear_config(world, student_dir, teacher_dir, "rear-lowrank")
    task = build_task(cfg, torch.device("cpu"))
    head = {n: p.detach().clone() for n, p in task.student_rear.rank_head.named_parameters()}
    with torch.no_grad():
        before = task.distances(all_rows(task))[1].item()
    after = rear_train_steps(task, cfg, 8)[1].item()
    assert task.stats["rank_head"] == "lowrank_attn" and after < 0.5 * before
    assert all(torch.equal(p, head[n]) for n, p in task.student_rear.rank_head.named_parameters())


def test_a_lora_rear_teacher_is_merged(world, tmp_path):
    """A REAR teacher saved as LoRA (adapter + trained rows over the base) is merged when loaded:
    its own merged plain checkpoint as the student gives KL and rank MSE 0."""
    from transformers import AutoTokenizer

    from rearqa.reader.rear import add_lora
    from rearqa.reader.rear.model import RearModel

    rear = RearModel.from_base(load_causal_lm(world / "base", torch.float32),
                               AutoTokenizer.from_pretrained(world / "base"),
                               base_model_dir=world / "base")
    rear = add_lora(rear, 2, 4, 0.0)
    torch.manual_seed(4)
    with torch.no_grad():
        for name, param in rear.lm.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # non-identity: B starts at zero
    rear.set_output_row(rear.token_ids.rank_score, torch.randn(rear.lm.config.hidden_size))
    rear.save_pretrained(tmp_path / "teacher")
    rear.merge_to_plain_checkpoint(tmp_path / "merged")
    task = build_task(rear_config(world, tmp_path / "merged", tmp_path / "teacher", "rear-lora-t"),
                      torch.device("cpu"))
    with torch.no_grad():
        kl, mse = task.distances(all_rows(task))
        scores = task.teacher_rear.score_texts("who wrote hamlet ?", ["hamlet is a tragedy ."])
    assert abs(kl.item()) < 1e-5 and mse.item() < 1e-8 and scores.abs().item() > 1e-2
    assert not task.teacher_rear.is_lora and task.teacher_record["kind"] == "rear"
