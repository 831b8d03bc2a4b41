"""MASA as a backbone transform: S = L atoms rebuild every projection exactly, fewer atoms give the
best rank-S fit of the stacked weights (and are exact on weights that are S-atom mixes), bad atom
counts and projection names are refused with what is valid, and a converted reader is a stock
checkpoint that transformers loads in a fresh process, with a compact dictionary beside it that
rebuilds the served weights."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from rearqa.config_errors import ConfigError
from rearqa.reader.backbone import get_transform, read_manifest
from rearqa.reader.backbone.loading import load_causal_lm
from rearqa.reader.backbone.masa.config import MasaConfig
from rearqa.reader.backbone.masa.convert import convert, decompose, load_dictionary, projection_modules
from rearqa.reader.backbone.masa.transform import DICTIONARY_FILE, REPORT_FILE
from rearqa.testing import tiny_llama

LAYERS = 4
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
IDS = torch.tensor([[1, 5, 7, 9, 11, 13, 2, 40, 17]])


def small_llama(seed=0):
    """4 layers, hidden 16 (q/o 16 x 16, k/v 8 x 16), float32."""
    return tiny_llama(64, tied=False, hidden_size=16, seed=seed, layers=LAYERS)


def weights(model, name):
    return torch.stack([m.weight.detach().double() for m in projection_modules(model, name)])


def logits(model):
    with torch.no_grad():
        return model(input_ids=IDS, use_cache=False).logits


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def test_as_many_atoms_as_layers_rebuilds_every_projection_exactly():
    model = small_llama()
    rebuilt, tensors, report = convert(model, MasaConfig(atoms=LAYERS))
    for name in PROJECTIONS:
        torch.testing.assert_close(weights(rebuilt, name), weights(model, name), rtol=0, atol=2e-7)
        assert max(report["projections"][name]["relative_error"]) < 1e-6
        assert report["projections"][name]["energy_kept"] == pytest.approx(1.0)
    torch.testing.assert_close(logits(rebuilt), logits(model), rtol=0, atol=1e-5)
    assert rebuilt is not model  # the source is left as it was


def test_fewer_atoms_are_the_best_rank_s_fit_of_the_stacked_weights():
    model = small_llama()
    kept = []
    for atoms in (1, 2, 3):
        rebuilt, tensors, report = convert(model, MasaConfig(atoms=atoms))
        original, fitted = weights(model, "q_proj"), weights(rebuilt, "q_proj")
        sigma = torch.linalg.svdvals(original.flatten(1))
        # Eckart-Young: the squared error summed over layers is the dropped singular values' energy
        assert (fitted - original).square().sum().item() == pytest.approx(sigma[atoms:].square().sum().item(),
                                                                           rel=1e-5)
        assert tensors["q_proj.atoms"].shape == (atoms, 16, 16)
        assert tensors["k_proj.coefficients"].shape == (LAYERS, atoms)
        kept.append(report["projections"]["q_proj"]["energy_kept"])
        assert torch.isfinite(logits(rebuilt)).all()
    assert kept == sorted(kept) and kept[-1] < 1


@torch.no_grad()
def test_weights_that_are_mixes_of_s_atoms_are_rebuilt_exactly_from_s():
    model = small_llama()
    for name in PROJECTIONS:
        modules = projection_modules(model, name)
        atoms = torch.randn(2, *modules[0].weight.shape)
        for module in modules:
            module.weight.copy_(torch.einsum("s,soi->oi", torch.randn(2), atoms))
    rebuilt, _, report = convert(model, MasaConfig(atoms=2))
    for name in PROJECTIONS:
        torch.testing.assert_close(weights(rebuilt, name), weights(model, name), rtol=0, atol=1e-6)
    torch.testing.assert_close(logits(rebuilt), logits(model), rtol=0, atol=1e-5)


def test_the_decomposition_is_canonical():
    model = small_llama()
    first, second = decompose([m.weight for m in projection_modules(model, "v_proj")]), \
        decompose([m.weight.clone() for m in projection_modules(model, "v_proj")])
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    coefficients = first[0]
    assert (coefficients.gather(0, coefficients.abs().argmax(0, keepdim=True)) > 0).all()
    torch.testing.assert_close(coefficients.T @ coefficients, torch.eye(LAYERS, dtype=torch.float64))


@pytest.mark.parametrize("atoms,match", [(0, "positive integer"), (True, "positive integer"),
                                         (5, "takes 1 to 4 atoms"), (30, "takes 1 to 4 atoms")])
def test_an_atom_count_outside_one_to_the_layer_count_is_refused_with_the_range(atoms, match):
    with pytest.raises(ConfigError, match=match):
        MasaConfig(atoms=atoms).check_model(small_llama().config)


def test_an_unknown_projection_is_refused_with_the_layer_s_linear_modules():
    with pytest.raises(ConfigError, match=r"no linear 'qkv_proj'.*'gate_proj'.*'q_proj'"):
        convert(small_llama(), MasaConfig(atoms=2, projections=["q_proj", "qkv_proj"]))
    with pytest.raises(ConfigError, match="distinct projection names"):
        MasaConfig(projections=["q_proj", "q_proj"])
    assert MasaConfig(projections="q_proj,gate_proj").projections == ["q_proj", "gate_proj"]


def test_mlp_projections_share_atoms_on_request():
    model = small_llama()
    rebuilt, tensors, report = convert(model, MasaConfig(atoms=LAYERS, projections=["gate_proj", "down_proj"]))
    assert sorted(report["projections"]) == ["down_proj", "gate_proj"]
    torch.testing.assert_close(logits(rebuilt), logits(model), rtol=0, atol=1e-5)
    assert get_transform("masa").label({"atoms": 4, "projections": ["gate_proj", "down_proj"]}) == \
        "masa(4 atoms on gate_proj+down_proj)"


LOAD = """
import sys, torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32).eval()
with torch.no_grad():
    torch.save(model(input_ids=torch.load(sys.argv[2]), use_cache=False).logits, sys.argv[3])
"""


def test_a_converted_reader_is_a_stock_checkpoint_with_its_dictionary_beside_it(tmp_path):
    from safetensors.torch import load_file

    model = small_llama()
    transform = get_transform("masa")
    cfg = MasaConfig(atoms=2)
    rebuilt = transform.apply(model, None, cfg)
    out = tmp_path / "reader"
    transform.export(rebuilt, out, cfg)
    manifest = read_manifest(out)
    assert manifest.transform == "masa" and manifest.export_format == "llama_rebuilt" and manifest.vllm_servable
    assert manifest.label == "masa(2 atoms)" and manifest.kv_bytes_per_token == 2 * LAYERS * 1 * 8 * 4
    assert json.loads((out / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    # stock transformers, in a fresh process without rearqa on the path
    torch.save(IDS, tmp_path / "ids.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-c", LOAD, str(out), str(tmp_path / "ids.pt"), str(tmp_path / "out.pt")],
                         env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), logits(rebuilt), rtol=0, atol=1e-6)
    torch.testing.assert_close(logits(load_causal_lm(out, torch.float32)), logits(rebuilt), rtol=0, atol=1e-6)
    # the compact form alone rebuilds the served weights
    tensors = load_file(out / DICTIONARY_FILE)
    assert sorted(tensors) == sorted(f"{p}.{t}" for p in PROJECTIONS for t in ("atoms", "coefficients"))
    again = load_dictionary(small_llama(seed=5), tensors)
    for name in PROJECTIONS:
        torch.testing.assert_close(weights(again, name), weights(rebuilt, name), rtol=0, atol=1e-6)
    report = json.loads((out / REPORT_FILE).read_text())
    shared = LAYERS * (16 * 16 * 2 + 8 * 16 * 2)
    compact = 2 * (16 * 16 * 2 + 8 * 16 * 2) + 4 * LAYERS * 2
    params = report["params"]
    assert (params["shared_original"], params["shared_compact"]) == (shared, compact)
    assert params["model_original"] - params["model_compact"] == shared - compact
    assert report["bytes"]["shared_compact"] == compact * 4 and report["bytes"]["dtype"] == "float32"


def test_rearqa_convert_writes_a_masa_reader_without_calibration(tmp_path):
    """The command line end to end on a tiny checkpoint: weight only, so a home holding only a
    reader directory will do."""
    from typer.testing import CliRunner

    from rearqa.app.cli import app
    from rearqa.testing import tiny_tokenizer

    source = tmp_path / "tiny"
    small_llama().save_pretrained(source)
    tiny_tokenizer().save_pretrained(source)
    home = tmp_path / "home"
    (home / "models" / "smollm2-135m-instruct").mkdir(parents=True)
    (home / "models" / "smollm2-135m-instruct" / "config.json").write_text("{}")
    out = tmp_path / "masa"
    result = CliRunner().invoke(app, ["convert", "--transform", "masa", "--from", str(source), "--atoms",
                                      str(LAYERS), "--dtype", "float32", "--home", str(home), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "masa(4 atoms)" in result.output
    manifest = read_manifest(out)
    assert manifest.settings["atoms"] == LAYERS and manifest.calibration == {}
    torch.testing.assert_close(logits(load_causal_lm(out)), logits(small_llama()), rtol=0, atol=1e-5)
    bad = CliRunner().invoke(app, ["convert", "--transform", "masa", "--from", str(source), "--atoms", "5",
                                   "--home", str(home), "--out", str(tmp_path / "bad")])
    assert bad.exit_code != 0 and "1 to 4" in str(bad.exception) + bad.output
    other = CliRunner().invoke(app, ["convert", "--transform", "kv_merge", "--from", str(source), "--atoms", "2",
                                     "--home", str(home), "--out", str(tmp_path / "other")])
    assert other.exit_code != 0 and "does not take --atoms" in str(other.exception) + other.output
