"""reader.hf_adapter 'unmerged': an adapter run beside the weights as loaded, its linear layers
through the fused LoRA op (adapters/unmerged.py). On the CPU the op runs its torch reference; the
Triton kernel's agreement with it is tests/kernels/test_lora_linear.py's, and the layer's own run
on CUDA is test_the_fused_layer_runs_the_kernel_on_the_gpu below."""
from __future__ import annotations

import pytest
import torch

from rearqa.config_errors import ConfigError
from rearqa.reader.adapters import wrap
from rearqa.reader.adapters.blocklora.config import BlockLoraSettings
from rearqa.reader.adapters.dvlora.config import DVLoraSettings
from rearqa.reader.adapters.hydra.config import HydraSettings
from rearqa.reader.adapters.lora.config import LoraSettings
from rearqa.reader.adapters.masa.config import MasaSettings
from rearqa.reader.adapters.unmerged import FusedLoraLinear, unmerged_lora
from rearqa.reader.config import ReaderConfig
from rearqa.testing import moved_off_init, tiny_llama
from rearqa.types import Passage

IDS = torch.tensor([[1, 5, 7, 9, 11, 13, 2, 40]])
FUSED = {  # every layer has exact low-rank factors: all 14 adapted layers run the op
    "lora": ("lora", LoraSettings(r=4, alpha=12, dropout=0.0)),
    "hydra": ("hydra", HydraSettings(r=4, alpha=8, dropout=0.0, sequential_r=2, sequential_alpha=3,
                                     init="random")),
    "gdvlora-scalar": ("dvlora", DVLoraSettings(r=4, alpha=8, dropout=0.0, gate="scalar", init="random")),
    "blocklora-input": ("blocklora", BlockLoraSettings(r=4, alpha=8, dropout=0.0, blocks=2, init="random",
                                                       share="input")),
}
KEPT = {  # no exact low-rank factors: every layer keeps its PEFT layer
    "gdvlora-input": ("dvlora", DVLoraSettings(r=4, alpha=8, dropout=0.0, gate="input", init="random")),
    "masa": ("masa", MasaSettings(r=4, alpha=8, dropout=0.0, atoms=2, init="random")),
}

pytestmark = pytest.mark.usefixtures("one_thread")  # fixture in tests/conftest.py


def base_model():
    return tiny_llama(64, tied=False, hidden_size=16, seed=3)


def adapted(name, settings, **kwargs):
    return moved_off_init(wrap(name, base_model(), settings, **kwargs).eval())


def fused_layers(model) -> list[FusedLoraLinear]:
    return [m for m in model.modules() if isinstance(m, FusedLoraLinear)]


@pytest.mark.parametrize("case", list(FUSED))
def test_the_unmerged_model_computes_what_the_adapter_model_does(case):
    model = adapted(*FUSED[case])
    weights = {n.replace(".base_layer", ""): p.data_ptr()
               for n, p in model.get_base_model().named_parameters() if "lora_" not in n}
    with torch.no_grad():
        expected = model(IDS).logits
        assert (expected - base_model()(IDS).logits).abs().max() > 1e-2  # the adapter changes them
        unmerged = unmerged_lora(model)
        assert type(unmerged).__name__ == "LlamaForCausalLM"  # PEFT's wrappers are gone
        torch.testing.assert_close(unmerged(IDS).logits, expected, rtol=0, atol=1e-5)
    layers = fused_layers(unmerged)
    assert len(layers) == 14  # 7 linear layers x 2 decoder layers, the output layer left out
    kept = {n: p.data_ptr() for n, p in unmerged.named_parameters() if "lora_" not in n}
    assert kept == weights  # the weights as loaded, the very same tensors: nothing merged into them


def test_the_fused_layer_keeps_the_scaling_in_its_down_projection():
    model = adapted(*FUSED["lora"])
    peft_layer = model.get_base_model().model.layers[0].self_attn.q_proj
    a, b, scale = peft_layer.lora_A["default"].weight.clone(), peft_layer.lora_B["default"].weight.clone(), 12 / 4
    layer = fused_layers(unmerged_lora(model))[0]
    torch.testing.assert_close(layer.lora_a, scale * a, rtol=0, atol=0)
    torch.testing.assert_close(layer.lora_b, b, rtol=0, atol=0)
    assert layer.rank == 4 and "rank=4" in repr(layer)


@pytest.mark.parametrize("case", list(KEPT))
def test_a_layer_without_exact_factors_keeps_its_peft_layer(case, caplog):
    model = adapted(*KEPT[case])
    adapted_layers = {"gdvlora-input": 14, "masa": 8}[case]  # masa: q, k, v, o of 2 layers
    with torch.no_grad():
        expected = model(IDS).logits
        with caplog.at_level("INFO", logger="rearqa.reader.adapters.unmerged"):
            unmerged = unmerged_lora(model)
        assert unmerged is model and not fused_layers(unmerged)
        torch.testing.assert_close(unmerged(IDS).logits, expected, rtol=0, atol=0)
    reason = {"gdvlora-input": "gate depends on the input", "masa": "masa's update is not low rank"}[case]
    assert f"0 linear layers run the fused LoRA op, {adapted_layers} keep their PEFT layer" in caplog.text
    assert reason in caplog.text


def test_trained_token_rows_are_merged_beside_the_fused_layers():
    """REAR's recipe: LoRA on every linear layer plus new vocabulary rows (PEFT trainable tokens)."""
    model = adapted(*FUSED["lora"], trainable_token_indices={"embed_tokens": [5, 7]})
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "token_adapter" in name:
                param.add_(torch.randn_like(param))
        expected = model(IDS).logits
        without_rows = unmerged_lora(adapted(*FUSED["lora"]))(IDS).logits
        assert (expected - without_rows).abs().max() > 1e-2  # the rows matter to these logits
        unmerged = unmerged_lora(model)
        assert type(unmerged).__name__ == "LlamaForCausalLM"
        torch.testing.assert_close(unmerged(IDS).logits, expected, rtol=0, atol=1e-5)


def test_the_fused_layer_refuses_training_mode():
    unmerged = unmerged_lora(adapted(*FUSED["lora"]))
    unmerged.train()
    with pytest.raises(RuntimeError, match="no backward on CUDA"):
        unmerged(IDS)


def test_fused_factors_must_fit_the_layer():
    base = torch.nn.Linear(16, 8)
    with pytest.raises(ValueError, match=r"expected \(r, 16\) and \(8, r\)"):
        FusedLoraLinear(base, torch.zeros(4, 8), torch.zeros(16, 4))


def test_the_linear_flop_count_includes_the_unmerged_factors():
    from rearqa.reader.engines.hf import linear_flops_per_token

    merged = adapted(*FUSED["lora"]).merge_and_unload()
    unmerged = unmerged_lora(adapted(*FUSED["lora"]))
    extra = sum(2 * (layer.lora_a.numel() + layer.lora_b.numel()) for layer in fused_layers(unmerged))
    assert linear_flops_per_token(unmerged) == linear_flops_per_token(merged) + extra


def test_hf_adapter_is_checked_against_tpla():
    assert ReaderConfig(hf_adapter="unmerged").hf_adapter == "unmerged"
    assert ReaderConfig(engine="vllm", hf_adapter="unmerged").vllm_adapter == "merged"  # vllm's own key
    with pytest.raises(ConfigError, match="choose one of"):
        ReaderConfig(hf_adapter="fused")
    with pytest.raises(ConfigError, match="TPLA rotates the merged weights"):
        ReaderConfig(method="rag-ft", tp_shards=2, hf_adapter="unmerged")


def test_serve_takes_hf_adapter(tmp_path):
    from rearqa.app.cli import _pipeline

    assert _pipeline(None, tmp_path, hf_adapter="unmerged").config.reader.hf_adapter == "unmerged"
    assert _pipeline(None, tmp_path, hf_adapter="").config.reader.hf_adapter == "merged"  # the config's


def test_an_adapter_that_cannot_merge_is_sent_to_unmerged(tmp_path):
    from rearqa.reader.config import resolve_adapter

    adapted(*KEPT["gdvlora-input"]).save_pretrained(tmp_path / "gate")
    with pytest.raises(ConfigError, match="reader.hf_adapter: unmerged"):
        resolve_adapter(ReaderConfig(method="rag-ft", adapter=str(tmp_path / "gate")))
    config = ReaderConfig(method="rag-ft", adapter=str(tmp_path / "gate"), hf_adapter="unmerged")
    assert resolve_adapter(config) == tmp_path / "gate"


def test_both_readers_choose_merged_or_unmerged_in_one_place():
    # finetuned.merge_lora (rag-ft, closed-book-ft) and RearReader run a loaded adapter through
    # served_lm: a merge that cannot be done names the fix, and unmerged serves the same adapter
    from rearqa.reader.adapters.unmerged import served_lm

    with pytest.raises(ConfigError, match="cannot be merged.*reader.hf_adapter: unmerged"):
        served_lm(adapted(*KEPT["gdvlora-input"]), "merged")
    model = adapted(*KEPT["gdvlora-input"])
    with torch.no_grad():
        expected = model(IDS).logits
        assert torch.equal(served_lm(model, "unmerged")(IDS).logits, expected)  # every layer kept bit for bit


@pytest.mark.slow
def test_the_shipped_rag_ft_reads_the_same_unmerged(reader_dir):
    """The real SmolLM2 with the shipped rag-ft adapter: the unmerged reader's greedy answers are
    the merged reader's, its 210 adapted layers run the op, and its weights are the base's."""
    from safetensors.torch import load_file

    from rearqa.reader.config import default_adapter_dir
    from rearqa.reader.finetuned import DeviceHFEngine, FinetunedReader

    config = ReaderConfig(method="rag-ft", max_new_tokens=12, dtype="float32")
    passages = [Passage(id="p", title="Paris", text="Paris is the capital of France."),
                Passage(id="h", title="Hamlet", text="Hamlet is a tragedy by William Shakespeare.")]
    questions = ["What is the capital of France?", "Who wrote Hamlet?"]
    texts = {}
    for mode in ("merged", "unmerged"):
        engine = DeviceHFEngine(reader_dir, "float32", threads=2, device="cpu",
                                adapter=default_adapter_dir("rag-ft"), adapter_mode=mode)
        reader = FinetunedReader(config, reader_dir, engine=engine)
        texts[mode] = [a.text for a in reader.read_batch(questions, [passages, passages])]
        if mode == "unmerged":
            layers = fused_layers(engine.model)
            assert len(layers) == 30 * 7
            q = engine.model.model.layers[0].self_attn.q_proj
            shipped = load_file(str(reader_dir / "model.safetensors"))["model.layers.0.self_attn.q_proj.weight"]
            torch.testing.assert_close(q.weight, shipped.float(), rtol=0, atol=0)
    assert texts["unmerged"] == texts["merged"]
    assert all(texts["merged"]), texts


@pytest.mark.slow
def test_the_shipped_rear_judges_the_same_unmerged(reader_dir):
    """The shipped REAR checkpoint (LoRA + trained token rows + rank head): relevance scores and
    answers unmerged equal the merged reader's."""
    from rearqa.reader.config import default_checkpoint_dir
    from rearqa.reader.rear.reader import RearReader

    passages = [Passage(id="p", title="Paris", text="Paris is the capital of France."),
                Passage(id="h", title="Hamlet", text="Hamlet is a tragedy by William Shakespeare.")]
    answers = {}
    for mode in ("merged", "unmerged"):
        config = ReaderConfig(method="rear", dtype="float32", max_new_tokens=8, hf_adapter=mode)
        reader = RearReader(config, default_checkpoint_dir(), reader_dir, "cpu")
        answers[mode] = reader.read_batch(["What is the capital of France?"], [passages])[0]
    assert len(fused_layers(reader.model.causal_lm)) == 30 * 7
    merged, unmerged = answers["merged"], answers["unmerged"]
    assert unmerged.text == merged.text
    for a, b in zip(unmerged.citations, merged.citations):
        assert a.judgment == b.judgment
        assert a.relevance == pytest.approx(b.relevance, abs=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the Triton kernel)")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_the_fused_layer_runs_the_kernel_on_the_gpu(dtype):
    """On CUDA the unmerged model runs the Triton kernel, and its logits are the PEFT model's."""
    pytest.importorskip("triton")
    from rearqa.kernels.lora_linear import lora_linear

    model = adapted(*FUSED["hydra"]).to("cuda", dtype)
    ids = IDS.to("cuda")
    with torch.no_grad():
        expected = model(ids).logits.float()
        unmerged = unmerged_lora(model)
        layer = fused_layers(unmerged)[0]
        x = torch.randn(5, layer.in_features, device="cuda", dtype=dtype)
        assert lora_linear.backend(x, layer.weight, layer.lora_a, layer.lora_b) == "triton"
        got = unmerged(ids).logits.float()
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(got, expected, rtol=0, atol=tol * max(1.0, expected.abs().max().item()))


def test_the_benchmark_times_each_mode_against_merged(tmp_path):
    """scripts/bench_hf_adapter.py on a tiny Llama and its saved adapter: one row per mode and batch,
    the unmerged model fused, each ratio over the merged model's time of the same run."""
    import importlib.util
    import json
    from pathlib import Path

    base_model().save_pretrained(tmp_path / "base")
    adapted(*FUSED["lora"]).save_pretrained(tmp_path / "adapter")
    script = Path(__file__).resolve().parents[2] / "scripts" / "bench_hf_adapter.py"
    spec = importlib.util.spec_from_file_location("bench_hf_adapter", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--device", "cpu", "--model", str(tmp_path / "base"), "--adapter", str(tmp_path / "adapter"),
                "--batch", "1", "2", "--prompt", "4", "--new", "2", "--repeats", "1",
                "--out", str(tmp_path / "out.json")])
    rows = json.loads((tmp_path / "out.json").read_text())["rows"]
    assert [(r["mode"], r["batch"]) for r in rows] == [(m, b) for m in ("merged", "unmerged", "peft") for b in (1, 2)]
    assert [r["fused_layers"] for r in rows] == [0, 0, 14, 14, 0, 0]
    for r in rows:
        assert r["prefill_s"] > 0 and r["generate_s"] > 0
        if r["mode"] == "merged":
            assert r["prefill_over_merged"] == r["generate_over_merged"] == 1.0
