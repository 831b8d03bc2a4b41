"""Norm monitoring (rearqa.training.norms) on the tiny training world: the numbers are those of
X W_eff by hand, a monitored run trains exactly as an unmonitored one, and a resume neither
duplicates nor loses rows."""
import json
import math
from pathlib import Path

import pytest
import torch

from rearqa.config_errors import ConfigError
from rearqa.training.config import TrainConfig
from rearqa.training.norms import attention_projections, main, measure, read_norms
from rearqa.training.train import train


def records(out, name="train_log.jsonl"):
    return [json.loads(line) for line in (Path(out) / name).read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(train_config):
    """The same 6-step REAR run (LoRA dropout on) without and with the monitor (every 2 steps)."""
    quiet = dict(echo=lambda *_: None)
    plain = train_config("plain", rag_k=3)
    monitored = train_config("monitored", rag_k=3, norm_monitor_every=2)
    train(plain, **quiet)
    train(monitored, **quiet)
    return plain, monitored


@pytest.mark.parametrize("method, options", [("lora", {}), ("hydra", {"init": "random"})])
def test_q_max_is_the_max_entry_of_x_times_the_adapted_weight(method, options):
    from rearqa.reader.adapters import get_adapter, wrap
    from rearqa.testing import tiny_llama

    torch.manual_seed(0)
    lm = tiny_llama(40)
    model = wrap(method, lm, get_adapter(method).config_cls(r=2, alpha=4, dropout=0.1, **options))
    with torch.no_grad():  # a non-zero delta for plain LoRA too (its B starts at 0)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    model.train()
    q, k = (attention_projections(lm.model)[1][name] for name in ("q_proj", "k_proj"))
    seen = []
    handle = q.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    probe = [torch.tensor([2, 5, 6, 7, 8, 9]), torch.tensor([2, 11, 12])]
    rows = measure(model, probe, torch.device("cpu"))
    handle.remove()
    assert all(m.training for m in model.modules())  # every module's mode is back
    x = torch.cat([s.reshape(-1, s.shape[-1]) for s in seen])  # (positions, D), layer 1's X
    for module, key in ((q, "q_max"), (k, "k_max")):
        weight = module.base_layer.weight + module.get_delta_weight("default")  # W0 + the delta
        assert module.get_delta_weight("default").abs().max() > 0.01
        assert rows[1][key] == pytest.approx((x @ weight.T).abs().max().item(), rel=1e-4)
    assert rows[1]["x_max"] == pytest.approx(x.abs().max().item(), rel=1e-4)
    assert [r["layer"] for r in rows] == [0, 1] and rows[0]["L"] == 6
    assert rows[0]["sqrt_log_L"] == pytest.approx(math.sqrt(math.log(6)), abs=1e-5)
    assert rows[0]["head_dim"] == 8 and rows[0]["rows"] == 2


def test_a_monitored_run_trains_as_an_unmonitored_one_and_logs_each_layer(runs):
    plain, monitored = runs
    assert records(plain.out) == [{**r, "seconds": s["seconds"]}
                                  for r, s in zip(records(monitored.out), records(plain.out))]
    assert not (Path(plain.out) / "norms.jsonl").exists()
    norms = read_norms(monitored.out)
    assert [(r["step"], r["layer"]) for r in norms] == [(s, l) for s in (0, 2, 4, 6) for l in (0, 1)]
    for r in norms:
        assert 0 < r["x_max"] and 0 < r["q_max"] < 1e4 and 0 < r["k_max"] < 1e4
        assert r["rows"] == 8 and r["sqrt_log_L"] == pytest.approx(math.sqrt(math.log(r["L"])),
                                                                    abs=1e-5)
    first, last = norms[0], norms[-2]  # layer 0 before and after training: the adapter moved it
    assert first["x_max"] == last["x_max"] and first["q_max"] != last["q_max"]


def test_a_resumed_run_redoes_the_rows_after_its_checkpoint_once(train_config, runs):
    _, monitored = runs
    resumed = train_config("monitored-resumed", rag_k=3, norm_monitor_every=2)
    train(resumed, stop_after_steps=3, echo=lambda *_: None)  # checkpoints at steps 2 and 3
    path = Path(resumed.out) / "norms.jsonl"
    assert sorted({r["step"] for r in read_norms(resumed.out)}) == [0, 2]
    with path.open("a") as f:  # as if a killed call had measured step 4 after its last checkpoint
        f.write(json.dumps({"step": 4, "layer": 0, "q_max": -1.0}) + "\n")
    train(resumed, echo=lambda *_: None)
    again, full = read_norms(resumed.out), read_norms(monitored.out)
    assert [(r["step"], r["layer"]) for r in again] == [(r["step"], r["layer"]) for r in full]
    for a, b in zip(again, full):
        assert a["q_max"] == pytest.approx(b["q_max"], rel=1e-5)
        assert a["k_max"] == pytest.approx(b["k_max"], rel=1e-5)


def test_the_plot_and_summary_cli(runs, tmp_path, capsys):
    _, monitored = runs
    png, summary = tmp_path / "norms.png", tmp_path / "norms.json"
    main([monitored.out, "--out", str(png), "--summary", str(summary)])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(summary.read_text())
    assert data["steps"] == [0, 2, 4, 6] and [r["layer"] for r in data["layers"]] == [0, 1]
    assert data["layers"][0]["q_ratio_last"] == pytest.approx(
        data["layers"][0]["q_max_last"] / data["sqrt_log_L"], rel=1e-2)
    assert json.loads(capsys.readouterr().out)["L"] == data["L"]


def test_bad_settings_and_models_without_k_proj_are_refused():
    from rearqa.testing import tiny_deepseek

    with pytest.raises(ConfigError, match="norm_monitor_every=-1"):
        TrainConfig(norm_monitor_every=-1)
    with pytest.raises(ConfigError, match="norm_probe_rows=0"):
        TrainConfig(norm_probe_rows=0)
    with pytest.raises(ConfigError, match="k_proj"):
        attention_projections(tiny_deepseek().model)
