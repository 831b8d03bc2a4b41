"""`rearqa convert`'s checks that need no conversion: options, sources, --reader."""
from __future__ import annotations

import pytest

from rearqa.app.cli import _reader_dir
from rearqa.app.convert_cmd import source_kind, transform_config
from rearqa.config_errors import ConfigError
from rearqa.reader.backbone import get_transform


def test_options_a_transform_does_not_take_are_refused_by_flag():
    transmla = get_transform("transmla")
    cfg = transform_config(transmla, {"kv_lora_rank": 96, "rope_dim": 64, "freqfold": None})
    assert (cfg.kv_lora_rank, cfg.rope_dim, cfg.freqfold) == (96, 64, 0)  # freqfold: not given
    with pytest.raises(ConfigError, match="does not take --merge-ratio"):
        transform_config(transmla, {"merge_ratio": 2})
    with pytest.raises(ConfigError, match="unknown backbone transform 'mla'; valid transforms"):
        get_transform("mla")


def test_sources_are_told_apart_by_what_they_hold(tmp_path):
    assert source_kind("base") == "base"
    for marker, kind in (("rear_config.json", "rear"), ("adapter_config.json", "adapter"),
                         ("config.json", "model")):
        d = tmp_path / kind
        d.mkdir()
        (d / marker).write_text("{}")
        assert source_kind(d) == kind
    with pytest.raises(ConfigError, match="not 'base', a transformers checkpoint"):
        source_kind(tmp_path / "nothing")


def test_reader_option_names_a_rear_checkpoint_or_a_model(tmp_path):
    assert _reader_dir(None) == {}
    (tmp_path / "config.json").write_text("{}")
    assert _reader_dir(tmp_path) == {"model": str(tmp_path)}
    (tmp_path / "rear_config.json").write_text("{}")
    assert _reader_dir(tmp_path) == {"checkpoint": str(tmp_path)}
    with pytest.raises(FileNotFoundError, match="no such directory"):
        _reader_dir(tmp_path / "missing")


def test_a_calibration_file_round_trips_and_a_changed_one_is_refused(tmp_path):
    import json

    import torch

    from rearqa.app.convert_cmd import calibration_for
    from rearqa.reader.backbone.transmla.calibration import CalibrationRecord, save_calibration
    from rearqa.reader.backbone.transmla.config import TransMLAConfig

    tokens = torch.randint(0, 1000, (4, 16))
    record = CalibrationRecord.of(tokens, "corpus.jsonl", seed=3)
    path = save_calibration(tmp_path / "calib.json", tokens, record)
    got, got_record = calibration_for(TransMLAConfig(), None, tmp_path, path)
    assert torch.equal(got, tokens) and got_record == record
    data = json.loads(path.read_text())
    data["tokens"][0][0] += 1
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="do not match the recorded sha256"):
        calibration_for(TransMLAConfig(), None, tmp_path, path)
    path.write_text("not json")
    with pytest.raises(ConfigError, match="not a calibration file"):
        calibration_for(TransMLAConfig(), None, tmp_path, path)


def test_xecomla_takes_energy_and_no_calibration_and_transmla_refuses_energy(tmp_path):
    from rearqa.app.convert_cmd import calibration_for

    xecomla = get_transform("xecomla")
    cfg = transform_config(xecomla, {"kv_lora_rank": None, "rope_dim": 32, "energy": 0.95,
                                     "freqfold": None, "calib_passages": None})
    assert (cfg.kv_lora_rank, cfg.rope_dim, cfg.energy) == (None, 32, 0.95)
    assert calibration_for(cfg, None, tmp_path) == (None, None)
    with pytest.raises(ConfigError, match="does not take --energy"):
        transform_config(get_transform("transmla"), {"energy": 0.9})
    with pytest.raises(ConfigError, match="does not take --freqfold"):
        transform_config(xecomla, {"freqfold": 2})


def test_loraprune_rebuilds_a_pruned_reader_from_a_mask_on_the_command_line(tmp_path, prepared_home):
    import torch
    from typer.testing import CliRunner

    from rearqa.app.cli import app as cli
    from rearqa.reader.backbone import read_manifest
    from rearqa.reader.backbone.loading import load_causal_lm
    from rearqa.reader.backbone.loraprune.mask import PruneMask
    from rearqa.testing import tiny_llama, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    source = tmp_path / "source"
    tiny_llama(len(tokenizer), hidden_size=32).save_pretrained(source)  # 2 heads on 1 KV head, MLP 64
    tokenizer.save_pretrained(source)
    mask = PruneMask(1, 64, [[0], [0]], [list(range(0, 64, 2)), list(range(32))]).save(tmp_path / "m.json")
    args = ["convert", "--transform", "loraprune", "--from", str(source), "--mask", str(mask),
            "--dtype", "float32", "--home", str(prepared_home)]
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "pruned")])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "pruned")
    assert manifest.transform == "loraprune" and manifest.settings["mlp_channels"] == 32
    pruned = load_causal_lm(tmp_path / "pruned")
    assert pruned.config.intermediate_size == 32 and pruned.config.num_key_value_heads == 1
    ids = torch.tensor([[2, 7, 9, 11]])
    assert pruned(ids).logits.shape == (1, 4, len(tokenizer))
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "bad"), "--kv-lora-rank", "4"])
    assert result.exit_code != 0 and "does not take --kv-lora-rank" in str(result.exception)
