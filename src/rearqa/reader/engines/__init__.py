"""Reader engines, registered by name and imported lazily.

An engine turns chat messages into text. `hf` runs transformers (training, research, any custom
attention); `vllm` runs an in-process vLLM (serving and batch throughput). The REAR reader picks
its engine from the same `reader.engine` setting (rearqa.reader.rear.config.REAR_ENGINES).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rearqa.environment import set_offline_defaults
from rearqa.registry import resolve

ENGINES: dict[str, str] = {
    "hf": "rearqa.reader.engines.hf:HFEngine",
    "vllm": "rearqa.reader.engines.vllm_engine:VllmEngine",
}


def get_engine_class(name: str) -> type:
    return resolve(ENGINES, name, "reader engine")


def build_engine(name: str, **kwargs: Any):
    return get_engine_class(name)(**kwargs)


def checkpoint_dir(model_dir: str | Path) -> Path:
    """`model_dir` as a Path once it holds a transformers checkpoint (config.json), with the hub
    switched off for whatever loads it; a clear error otherwise."""
    set_offline_defaults()
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"reader model directory {model_dir} has no config.json; run `rearqa data prepare` "
            "for the bundled model, or point reader.model at a transformers checkpoint")
    return model_dir


def eos_token_ids(tokenizer, configured: int | list[int] | None) -> set[int]:
    """The ids generation stops at: the tokenizer's eos and the generation config's `configured`
    eos_token_id (an id, a list of ids or None). Both count: a fine-tuned reader ends its answers
    with the tokenizer's eos (SmolLM2: <|im_end|>), and a generation config written by another
    transformers version may name a different one (seen on the GPU machine: fine-tuned answers
    ran on past <|im_end|> into "user" turns)."""
    ids = set(configured) if isinstance(configured, (list, tuple)) else {configured}
    return {i for i in ids | {tokenizer.eos_token_id} if i is not None}


def saved_eos_id(tokenizer, directory: str | Path) -> int | None:
    """The id in `tokenizer` of the eos token named by the tokenizer config saved in `directory`
    (a LoRA adapter or checkpoint written where it trained), or None without one. A reader's
    answers end with the eos its training appended, and that can differ from the base model's:
    on the GPU machine's transformers the GGUF-converted SmolLM2 tokenizer names <|im_start|> as
    eos, here <|im_end|>, so the adapters trained there end answers with <|im_start|>."""
    import json

    path = Path(directory) / "tokenizer_config.json"
    if not path.is_file():
        return None
    eos = json.loads(path.read_text(encoding="utf-8")).get("eos_token")
    if isinstance(eos, dict):  # older configs store an AddedToken
        eos = eos.get("content")
    if not isinstance(eos, str):
        return None
    token_id = tokenizer.convert_tokens_to_ids(eos)
    return token_id if token_id != tokenizer.unk_token_id else None
