"""`rearqa convert --recipe`: a healed reader rebuilt from its recipe and adapter, on tiny Llamas
with calibration ids in a file, so nothing reads the corpus: TransMLA of a 2-layer Llama (head 8),
and KV-head merging (3 -> 1) and LoRAPrune (to a mask the recipe carries) of a 2-layer GQA Llama
(6 query heads on 3 KV heads of 8, MLP 32)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from safetensors.torch import load_file

from rearqa.app.convert_cmd import convert_reader
from rearqa.app.recipe_cmd import convert_recipe, package_healed
from rearqa.config_errors import ConfigError
from rearqa.reader.backbone import fingerprint as fp
from rearqa.reader.backbone import read_manifest
from rearqa.reader.backbone.loading import load_causal_lm
from rearqa.reader.backbone.loraprune.mask import PruneMask
from rearqa.reader.backbone.recipe import MAX_HEAL_BYTES, Recipe, file_sha256, read_recipe, write_recipe
from rearqa.reader.backbone.transmla.calibration import CalibrationRecord, save_calibration
from rearqa.testing import randomize_matrices, tiny_llama, tiny_tokenizer

SETTINGS = {"kv_lora_rank": 6, "rope_dim": 4}  # a rank below the cap (12): the PCA matters
MASK = PruneMask(3, 32, [[0, 2], [1, 2]], [list(range(0, 32, 2)), list(range(5, 21))])
# transform -> (settings, the rebuilt reader's label); loraprune's mask is written by `parts`
CASES = {"transmla": (SETTINGS, "transmla(6+4)"),
         "kv_merge": ({"kv_heads": 1, "calib_passages": 4, "calib_tokens": 16}, "kv_merge(1 kv heads)"),
         "loraprune": ({}, "loraprune(2 kv, 16 mlp)")}
EVERY_TRANSFORM = pytest.mark.parametrize("parts", list(CASES), indirect=True)
SHIPPED = Path(__file__).parents[2] / "checkpoints" / "healed"


class Parts(NamedTuple):
    root: Path
    plain: Path  # the conversion the adapter is over
    calib: Path | None  # its calibration ids (None: a transform that takes none)
    label: str


def gqa_llama(vocab_size: int):
    """2 layers, 6 query heads on 3 KV heads of 8 (GQA as SmolLM2), MLP 32, random weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=24, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=6, num_key_value_heads=3, head_dim=8,
                         max_position_embeddings=128, tie_word_embeddings=True, pad_token_id=1,
                         bos_token_id=2, eos_token_id=3)
    return randomize_matrices(LlamaForCausalLM(config).eval())


@pytest.fixture(scope="module")
def parts(request, tmp_path_factory, prepared_home):
    """A tiny source model dir, a calibration file, the plain conversion and a heal adapter
    (LoRA r=2 on every linear layer of the conversion, B drawn non-zero), for the transform
    `request.param` (default transmla)."""
    from rearqa.reader.adapters import wrap
    from rearqa.reader.adapters.lora.config import LoraSettings

    transform = getattr(request, "param", "transmla")
    settings, label = CASES[transform]
    threads = torch.get_num_threads()  # given back after the module: later tests keep theirs
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp(f"recipe-{transform}")
    tokenizer = tiny_tokenizer()
    source = tiny_llama(len(tokenizer)) if transform == "transmla" else gqa_llama(len(tokenizer))
    source.save_pretrained(root / "source")
    tokenizer.save_pretrained(root / "source")
    calib = None
    if transform != "loraprune":
        tokens = torch.randint(6, len(tokenizer), (4, 16), generator=torch.Generator().manual_seed(0))
        calib = save_calibration(root / "calib.json", tokens, CalibrationRecord.of(tokens, "tiny", 0))
    else:
        settings = {"mask": str(MASK.save(root / "chosen.json"))}
    plain = convert_reader(transform, root / "source", root / "plain", dict(settings),
                           home=prepared_home, progress=False, calib_file=calib)
    if transform == "loraprune":  # gone, as on another machine: the recipe takes the reader's copy
        (root / "chosen.json").unlink()
    torch.manual_seed(1)
    student = wrap("lora", load_causal_lm(plain, torch.float32), LoraSettings(r=2))
    with torch.no_grad():
        for name, param in student.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.1)
    student.save_pretrained(root / "adapter")
    yield Parts(root, plain, calib, label)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def shipped(parts):
    """The recipe directory package_healed writes for the plain conversion and its adapter."""
    return package_healed(parts.plain, parts.root / "adapter", parts.root / "healed" / "tiny",
                          parts.root / "source", parts.calib, note="test")


def weights(reader: Path) -> dict[str, torch.Tensor]:
    return load_file(reader / "model.safetensors")


@EVERY_TRANSFORM
def test_the_recipe_records_how_to_rebuild_with_paths_relative_to_itself(shipped, parts):
    data = json.loads((shipped / "recipe.json").read_text())
    manifest = read_manifest(parts.plain)
    assert data["source"] == "../../source" and data["calib_file"] == ("../../calib.json" if parts.calib else None)
    assert data["heal"] == "heal" and data["fingerprint"] == "fingerprint.json"
    assert data["settings"] == {**manifest.settings, **{k: f"{k}.json" for k in data["settings_sha256"]}}
    assert data["dtype"] == "bfloat16" and data["calib_sha256"] == manifest.calibration.get("sha256")
    recipe = read_recipe(shipped)  # the directory or the file
    assert recipe == read_recipe(shipped / "recipe.json") and recipe.source_path == parts.root / "source"


@EVERY_TRANSFORM
def test_a_recipe_carries_the_files_its_settings_name(shipped, parts):
    """loraprune's mask: copied from the pruned reader (loraprune_mask.json) into the recipe as
    mask.json, named relative to it, with its sha256; the other transforms name no file."""
    data = json.loads((shipped / "recipe.json").read_text())
    if "mask" not in read_manifest(parts.plain).settings:
        assert data["settings_sha256"] == {}
        return
    assert data["settings"]["mask"] == "mask.json" and data["settings_sha256"] == {
        "mask": file_sha256(shipped / "mask.json")}
    assert PruneMask.load(shipped / "mask.json") == MASK
    assert read_recipe(shipped).conversion_settings()["mask"] == str((shipped / "mask.json").resolve())


@EVERY_TRANSFORM
def test_no_heal_rebuilds_the_plain_conversion_and_twice_gives_the_same_weights(shipped, parts, tmp_path):
    plain = parts.plain
    a = convert_recipe(shipped, tmp_path / "a", heal=False, progress=False)
    b = convert_recipe(shipped, tmp_path / "b", heal=False, progress=False)
    expected, got_a, got_b = weights(plain), weights(a), weights(b)
    assert got_a.keys() == expected.keys()
    for name in expected:
        assert torch.equal(got_a[name], expected[name]) and torch.equal(got_b[name], expected[name]), name
    manifest = read_manifest(a)
    assert manifest.heal == {} and manifest.label == parts.label
    assert manifest.recipe["fingerprint_max_rel_diff"] == 0.0 and manifest.recipe["note"] == "test"


@EVERY_TRANSFORM
def test_the_healed_reader_is_the_conversion_with_its_adapter_merged(shipped, parts, tmp_path):
    """For loraprune the adapter is over the pruned model (sliced to the kept heads and channels):
    it is merged after the pruning, as after any conversion."""
    from rearqa.reader.finetuned import merge_lora

    root, plain = parts.root, parts.plain
    said = []
    healed = convert_recipe(shipped, tmp_path / "healed", say=said.append)
    assert any("fingerprint matches" in line for line in said)
    manifest = read_manifest(healed)
    assert manifest.label == f"{parts.label} healed" and manifest.dtype == "bfloat16"
    assert manifest.heal["sha256"] == json.loads((shipped / "recipe.json").read_text())["heal_sha256"]
    merged = merge_lora(load_causal_lm(plain, torch.float32), root / "adapter")  # the student + adapter
    ids = torch.randint(6, 40, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for param in merged.parameters():  # rounded to the recipe's dtype, as the healed reader is
            param.copy_(param.to(torch.bfloat16).float())
        want = merged(input_ids=ids).logits
        have = load_causal_lm(healed, torch.float32)(input_ids=ids).logits
        unhealed = load_causal_lm(plain, torch.float32)(input_ids=ids).logits
    torch.testing.assert_close(have, want, rtol=1e-6, atol=1e-6)
    assert (want - unhealed).abs().max() > 0.2  # the adapter did change the reader
    expected, got = merged.state_dict(), weights(healed)
    assert all(torch.equal(expected[name].to(torch.bfloat16), got[name]) for name in got)  # bit for bit


def test_a_changed_or_foreign_adapter_is_refused(shipped, parts, tmp_path, prepared_home):
    from rearqa.reader.adapters import wrap
    from rearqa.reader.adapters.lora.config import LoraSettings

    root, calib = parts.root, parts.calib
    recipe = read_recipe(shipped)
    # another conversion's adapter (rank 4, not 6): the shapes do not fit the rebuild
    other = convert_reader("transmla", root / "source", tmp_path / "r4", {"kv_lora_rank": 4, "rope_dim": 4},
                           home=prepared_home, progress=False, calib_file=calib)
    wrap("lora", load_causal_lm(other, torch.float32), LoraSettings(r=2)).save_pretrained(tmp_path / "foreign")
    foreign = Recipe(**{**recipe.to_dict(), "source": str(root / "source"), "calib_file": str(calib),
                        "heal": str(tmp_path / "foreign"), "heal_sha256": None, "fingerprint": None},
                     directory=tmp_path)
    write_recipe(tmp_path, foreign)
    with pytest.raises(ConfigError, match="does not fit the rebuilt conversion"):
        convert_recipe(tmp_path, tmp_path / "out1", progress=False)
    # the shipped adapter's weights changed: its sha256 no longer matches
    write_recipe(tmp_path, Recipe(**{**foreign.to_dict(), "heal": str(shipped / "heal"),
                                     "heal_sha256": "0" * 64}, directory=tmp_path))
    with pytest.raises(ConfigError, match="not the recipe's heal_sha256"):
        convert_recipe(tmp_path, tmp_path / "out2", progress=False)
    assert not (tmp_path / "out2").exists()  # refused before converting


@pytest.mark.parametrize("parts", ["loraprune"], indirect=True)
def test_a_recipe_whose_mask_is_missing_or_changed_is_refused(shipped, parts, tmp_path):
    recipe = read_recipe(shipped)
    moved = Recipe(**{**recipe.to_dict(), **{name: str(recipe.path(getattr(recipe, name)))  # absolute
                                             for name in ("source", "heal", "fingerprint")}}, directory=tmp_path)
    write_recipe(tmp_path, moved)
    with pytest.raises(ConfigError, match=r"settings.mask 'mask.json' .* does not exist"):
        convert_recipe(tmp_path, tmp_path / "out", progress=False)
    other = PruneMask(3, 32, [[0, 1], [1, 2]], MASK.mlp_keep)  # the same counts, other heads
    other.save(tmp_path / "mask.json")
    with pytest.raises(ConfigError, match="settings.mask .* is not the file the recipe was written with"):
        convert_recipe(tmp_path, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # refused before converting
    (tmp_path / "mask.json").write_bytes((shipped / "mask.json").read_bytes())
    rebuilt = convert_recipe(tmp_path, tmp_path / "out", heal=False, progress=False)
    assert PruneMask.load(rebuilt / "loraprune_mask.json") == MASK


def test_bad_recipes_are_refused_with_what_is_wrong(shipped, tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        read_recipe(tmp_path / "nowhere")
    (tmp_path / "recipe.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not readable JSON"):
        read_recipe(tmp_path)
    recipe = read_recipe(shipped)
    good = {**recipe.to_dict(), **{name: str(recipe.path(getattr(recipe, name)))  # absolute paths
                                   for name in ("source", "calib_file", "heal", "fingerprint")}}
    for change, match in (({"transform": "mla"}, "choose one of"), ({"dtype": "fp8"}, "dtype='fp8'"),
                          ({"kv_rank": 3}, r"unknown field\(s\) \['kv_rank'\]"),
                          ({"heal_sha256": "abc"}, "not a sha256"),
                          ({"source": "nothing"}, "source 'nothing' .* is not a directory"),
                          ({"calib_file": "gone.json"}, "calib_file 'gone.json'"),
                          ({"settings_sha256": {"mask": "0" * 64}}, r"has \['mask'\], which name no file")):
        (tmp_path / "recipe.json").write_text(json.dumps({**good, **change}))
        with pytest.raises(ConfigError, match=match):
            read_recipe(tmp_path)
    (tmp_path / "recipe.json").write_text(json.dumps(good))
    assert read_recipe(tmp_path).source_path == recipe.source_path


def with_head(prints: dict, name: str, scale: float) -> dict:
    """`prints` with the head values of tensor `name` scaled (-1: a flipped PCA direction)."""
    changed = json.loads(json.dumps(prints))
    changed["tensors"][name]["head"] = [x * scale for x in prints["tensors"][name]["head"]]
    return changed


def test_a_rebuild_unlike_the_fingerprint_is_warned_of_or_refused(shipped, tmp_path):
    prints = json.loads((shipped / "fingerprint.json").read_text())
    name = "layers.0.self_attn.kv_a_proj_with_mqa"
    assert fp.check(prints, prints) == ("match", fp.compare(prints, prints))
    verdict, result = fp.check(with_head(prints, name, 1.05), prints)
    assert verdict == "warn" and result["worst"] == name and 0.04 < result["max_rel_diff"] < 0.06
    assert fp.check(with_head(prints, name, -1), prints)[0] == "refuse"
    missing = json.loads(json.dumps(prints))
    del missing["tensors"][name]
    assert fp.compare(missing, prints)["mismatched"] == [f"{name}: not in the expected fingerprint"]
    try:
        (shipped / "fingerprint.json").write_text(json.dumps(with_head(prints, name, 1.05)))
        said = []
        convert_recipe(shipped, tmp_path / "warned", heal=False, say=said.append)
        assert any(line.startswith("warning: the rebuilt conversion differs from the fingerprint by 0.0") for line in said)
        (shipped / "fingerprint.json").write_text(json.dumps(with_head(prints, name, -1)))
        with pytest.raises(ConfigError, match="is not the one the recipe's fingerprint records"):
            convert_recipe(shipped, tmp_path / "refused", progress=False)
    finally:
        (shipped / "fingerprint.json").write_text(json.dumps(prints))


@pytest.mark.parametrize("recipe", sorted(SHIPPED.glob("*/recipe.json")) or [None])
def test_every_shipped_healed_reader_reads_and_its_adapter_fits_the_repo(recipe):
    if recipe is None:
        pytest.skip("no healed reader is shipped yet (checkpoints/healed/<name>/recipe.json)")
    from rearqa.reader.backbone.recipe import heal_dir

    parsed = read_recipe(recipe)
    if parsed.heal:
        assert (heal_dir(parsed) / "adapter_model.safetensors").stat().st_size <= MAX_HEAL_BYTES


@EVERY_TRANSFORM
def test_the_cli_rebuilds_from_a_recipe_and_takes_no_other_conversion_option(shipped, parts, tmp_path):
    from typer.testing import CliRunner

    from rearqa.app.cli import app as cli

    result = CliRunner().invoke(cli, ["convert", "--recipe", str(shipped), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "fingerprint matches" in result.output and f"{parts.label} healed" in result.output
    result = CliRunner().invoke(cli, ["convert", "--recipe", str(shipped), "--kv-lora-rank", "8",
                                      "--out", str(tmp_path / "x")])
    assert isinstance(result.exception, ConfigError) and "drop --kv-lora-rank" in str(result.exception)
    result = CliRunner().invoke(cli, ["convert", "--out", str(tmp_path / "y")])
    assert isinstance(result.exception, ConfigError) and "or --recipe" in str(result.exception)


def test_a_weight_only_recipe_needs_no_calibration_and_refuses_a_calibration_hash(parts, tmp_path,
                                                                                  prepared_home):
    root = parts.root
    settings = {"kv_lora_rank": 6, "rope_dim": 4, "latent_norm": True}
    plain = convert_reader("xecomla", root / "source", tmp_path / "plain", dict(settings),
                           home=prepared_home, progress=False, dtype="float32")
    write_recipe(tmp_path / "r", Recipe("xecomla", settings, str(root / "source"), dtype="float32",
                                        directory=tmp_path / "r"))
    rebuilt = convert_recipe(tmp_path / "r", tmp_path / "rebuilt", home=prepared_home, progress=False)
    expected, got = weights(plain), weights(rebuilt)
    assert all(torch.equal(expected[name], got[name]) for name in expected)
    assert fp.fingerprint(load_causal_lm(rebuilt))["tensors"]["layers.1.self_attn.kv_a_layernorm"]
    write_recipe(tmp_path / "r", Recipe("xecomla", settings, str(root / "source"),
                                        calib_sha256="0" * 64, directory=tmp_path / "r"))
    with pytest.raises(ConfigError, match="takes no calibration"):
        convert_recipe(tmp_path / "r", tmp_path / "again", home=prepared_home, progress=False)


# KL to the unconverted source on the last 2 calibration samples, healed / unhealed, as measured
# (bf16 rebuilds): TransMLA 96+64 .196 / .825 (session 9), kv_merge 3 -> 1 .409 / 1.592 (session 14),
# LoRAPrune 6/2 heads + 1024 channels .900 / 7.669 (session 15; a weight-only recipe, scored on
# the corpus samples of CORPUS_SAMPLES)
HEALED_KL = {"ragft-transmla-96-64": 0.35, "ragft-kvmerge-1": 0.7, "ragft-loraprune-2-1024": 1.5}
CORPUS_SAMPLES = SHIPPED / "transmla-calib-128x256-seed0.json"  # token ids of corpus passages


@pytest.mark.parametrize("recipe", sorted(SHIPPED.glob("*/recipe.json")) or [None])
def test_every_shipped_healed_reader_rebuilds_on_this_cpu_and_is_healed(recipe, tmp_path, prepared_home,
                                                                        both_cores):  # `parts` left one thread
    """The shipped healed reader rebuilt from its recipe on the real model: the conversion matches
    the GPU machine's fingerprint, the heal adapter is merged, and the reader is close to its
    teacher (the unconverted source) on the last 2 calibration samples (a recipe without
    calibration: the shipped corpus samples), under a bound between
    the KLs measured there healed and unhealed (HEALED_KL), so a missing or misapplied heal fails."""
    if recipe is None:
        pytest.skip("no healed reader is shipped yet (checkpoints/healed/<name>/recipe.json)")
    from rearqa.app.convert_cmd import load_source

    parsed = read_recipe(recipe)
    out = convert_recipe(recipe, tmp_path / "healed", home=prepared_home, progress=False)
    manifest = read_manifest(out)
    assert manifest.recipe["fingerprint_max_rel_diff"] < fp.WARN_REL
    assert manifest.heal["sha256"] == parsed.heal_sha256 and manifest.label.endswith("healed")
    teacher = load_source(parsed.source_path, prepared_home)[0].eval()
    student = load_causal_lm(out, torch.float32).eval()
    samples = parsed.path(parsed.calib_file) if parsed.calib_file else CORPUS_SAMPLES  # weight-only: corpus text
    ids = torch.tensor(json.loads(samples.read_text())["tokens"][-2:])
    with torch.no_grad():
        t = torch.log_softmax(teacher(input_ids=ids).logits.float(), -1)
        s = torch.log_softmax(student(input_ids=ids).logits.float(), -1)
    kl = (t.exp() * (t - s)).sum(-1).mean().item()
    bound = HEALED_KL.get(recipe.parent.name)
    assert bound, f"measure {recipe.parent.name}'s KL healed and unhealed and add its bound to HEALED_KL"
    assert 0 < kl < bound
