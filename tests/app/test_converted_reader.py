"""A reader converted by `rearqa convert` is used by path everywhere: the CLI, eval (report.json
names the backbone), the HTTP API (/health and answers name it), the chat, and REAR, whose rows
and head a conversion keeps. Small conversions of the real SmolLM2, each transform that writes
its own kind of checkpoint: TransMLA (an MLA reader, 8 calibration samples), KV-head merging
(3 -> 1 KV heads, 8 samples) and LoRAPrune (to a random 2-of-3 KV heads, 1024-channel mask)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from rearqa.app.cli import app as cli
from rearqa.app.convert_cmd import convert_reader
from rearqa.app.server import create_app
from rearqa.config import PipelineConfig
from rearqa.config_errors import ConfigError
from rearqa.pipeline import Pipeline
from rearqa.reader.backbone import read_manifest
from rearqa.reader.config import ReaderConfig, default_checkpoint_dir
from rearqa.retriever.config import RetrieverConfig

DATA = Path(__file__).parents[1] / "data"
SMALL = {"kv_lora_rank": 96, "rope_dim": 64, "calib_passages": 8}
# transform -> (settings, label, export format, KV bytes per token in bf16, report file)
CONVERSIONS = {
    "transmla": (SMALL, "transmla(96+64)", "hf_only", 30 * (96 + 64) * 2, "transmla_report.json"),
    "kv_merge": ({"kv_heads": 1, "calib_passages": 8}, "kv_merge(1 kv heads)", "llama_fewer_kv",
                 2 * 30 * 1 * 64 * 2, "kv_merge_report.json"),
    "loraprune": ({}, "loraprune(2 kv, 1024 mlp)", "llama_pruned", 2 * 30 * 2 * 64 * 2,
                  "loraprune_mask.json")}


def random_mask(path: Path) -> Path:
    """A LoRAPrune mask for SmolLM2 (30 layers, 3 KV heads, MLP 1536): 2 KV heads, 1024 channels."""
    from rearqa.reader.backbone.loraprune.mask import PruneMask

    g = torch.Generator().manual_seed(0)
    return PruneMask(3, 1536, [torch.randperm(3, generator=g)[:2].tolist() for _ in range(30)],
                     [torch.randperm(1536, generator=g)[:1024].tolist() for _ in range(30)]).save(path)


@pytest.fixture(scope="module", params=list(CONVERSIONS))
def converted(request, scratch_home, tmp_path_factory):
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp(request.param)
    settings = CONVERSIONS[request.param][0]
    if request.param == "loraprune":
        settings = {"mask": str(random_mask(root / "mask.json"))}
    return convert_reader(request.param, "base", root / "reader", dict(settings), home=scratch_home,
                          progress=False)


def label(reader: Path) -> str:
    """The label the converted reader `reader` should go by."""
    return CONVERSIONS[read_manifest(reader).transform][1]


@pytest.fixture(scope="module")
def pipe(scratch_home, converted):
    collection = f"converted-{read_manifest(converted).transform}"
    config = PipelineConfig(retriever=RetrieverConfig(collection=collection),
                            reader=ReaderConfig(max_new_tokens=8, model=str(converted)), k=2)
    pipe = Pipeline(config, home=scratch_home)
    pipe.collection.add_paths([DATA / "mini_corpus.jsonl"], progress=False)
    return pipe


def test_the_output_names_its_transform_calibration_and_source(converted):
    manifest = read_manifest(converted)
    _, name, export_format, kv_bytes, report = CONVERSIONS[manifest.transform]
    assert manifest.label == name and manifest.export_format == export_format
    assert manifest.kv_bytes_per_token == kv_bytes and manifest.dtype == "bfloat16"
    assert manifest.source["kind"] == "base" and (converted / report).is_file()
    if manifest.transform == "loraprune":  # a mask, no calibration text
        assert manifest.calibration == {} and manifest.settings["mlp_channels"] == 1024
        return
    assert manifest.calibration["n_samples"] == 8 and manifest.calibration["source"].endswith(".jsonl")
    if manifest.transform == "transmla":
        assert manifest.settings["freqfold"] == 2  # resolved and recorded, not left at "auto"
        assert json.loads((converted / report).read_text())["layers"][0]["pca_energy"] > 0.5


def test_bad_ranks_and_rope_widths_are_refused_with_the_valid_range(scratch_home, tmp_path):
    with pytest.raises(ConfigError, match=r"takes 1\.\.320"):
        convert_reader("transmla", "base", tmp_path / "a", {"kv_lora_rank": 400, "rope_dim": 64},
                       home=scratch_home, progress=False)
    with pytest.raises(ConfigError, match=r"one of \[2, 4, 8, 16, 32, 64\]"):
        convert_reader("transmla", "base", tmp_path / "b", {"kv_lora_rank": 64, "rope_dim": 48},
                       home=scratch_home, progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_api_and_its_answers_name_the_backbone(pipe, one_thread):
    app = create_app(pipe, warm=False)
    with TestClient(app) as client:
        answer = client.post("/ask", json={"question": "Who wrote Hamlet?"}).json()
        health = client.get("/health").json()
    assert answer["backbone"] == label(pipe.config.reader.model) and answer["citations"]
    assert health["backbone"] == label(pipe.config.reader.model) and health["status"] == "ready"


def test_eval_with_reader_dir_records_the_backbone(pipe, converted, scratch_home, tmp_path, one_thread):
    config = tmp_path / "run.yaml"  # the small collection of `pipe`, not the default corpus
    config.write_text(f"retriever:\n  collection: {pipe.config.retriever.collection}\n"
                      "reader:\n  max_new_tokens: 8\n")
    data = tmp_path / "qa.jsonl"
    data.write_text(json.dumps({"id": "q1", "question": "Who wrote Hamlet?",
                                "answers": ["William Shakespeare"]}) + "\n")
    result = CliRunner().invoke(cli, ["eval", "--dataset", str(data), "--out", str(tmp_path / "run"),
                                      "--k", "1", "--reader", str(converted), "--home", str(scratch_home),
                                      "--config", str(config)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["backbone"] == label(converted)
    assert report["pipeline_config"]["reader"]["model"] == str(converted)


def test_a_converted_rear_checkpoint_keeps_its_rows_head_and_routing(scratch_home, tmp_path, one_thread):
    from rearqa.reader.rear.model import RearModel

    source = default_checkpoint_dir()
    out = convert_reader("transmla", str(source), tmp_path / "rear", {**SMALL, "kv_lora_rank": 320},
                         home=scratch_home, progress=False, dtype="float32")
    from rearqa import assets

    original = RearModel.from_pretrained(source, base_model_dir=assets.reader_model_dir(scratch_home),
                                         dtype=torch.float32)
    rear = RearModel.from_pretrained(out, dtype=torch.float32)
    assert read_manifest(out).source["kind"] == "rear"
    assert rear.config.routing == original.config.routing
    assert rear.config.relevance_platt == original.config.relevance_platt
    assert rear.token_ids.to_dict() == original.token_ids.to_dict()
    rank_score = original.token_ids.rank_score
    torch.testing.assert_close(rear.output_row(rank_score), original.output_row(rank_score))
    passages = ["Hamlet is a tragedy written by William Shakespeare.", "Paris is the capital of France."]
    scores = rear.score_texts("Who wrote Hamlet?", passages)
    assert torch.isfinite(scores).all() and scores[0] > scores[1]


def test_the_chat_names_the_backbone(pipe):
    from rearqa.app.ui import build_ui

    demo = build_ui(pipe)
    shown = [b.value for b in demo.blocks.values() if getattr(b, "elem_id", None) == "backbone"]
    assert [v.replace("\\", "") for v in shown] == [f"Reader backbone: {label(pipe.config.reader.model)}"]  # md-escaped
