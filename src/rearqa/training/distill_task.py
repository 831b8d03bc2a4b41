"""What a distill run trains: a converted reader (the student) healed towards its source (the teacher).

A backbone transform (TransMLA, X-EcoMLA, ...) changes a reader's attention and with it, a
little, every next-token distribution. Distillation (Hinton et al., 2015) trains the student to
give the teacher's distribution back: the loss is KL(teacher || student) over the whole
vocabulary at every position of each sequence (rearqa.training.losses.chunked_kl_sum), on
corpus windows and rag-ft prompts of the train splits (rearqa.training.data.distill_rows), the
way TransMLA and X-EcoMLA heal their conversions.

    student  a converted reader dir (backbone.json), loaded with load_causal_lm
    teacher  the reader it was converted from: "base" (the base model), a transformers checkpoint,
             or a PEFT adapter merged into the base (a student converted from an adapter must
             be healed towards that merged model)

The teacher is frozen: eval mode, no gradients, bf16 on CUDA and fp32 on the CPU. What of the
student trains is `distill_trainable`:

    attention  every parameter of every attention block
    lora       LoRA (rearqa.reader.adapters, target "all-linear") on every linear layer; the
               result is an adapter that the student dir + merge_lora reads. A converted reader
               is a dense DeepseekV3, whose MLP PEFT 0.21 would remap to fused expert tensors it
               lacks; rearqa.reader.adapters.peft_compat keeps that remap off, so the dense MLP
               gets LoRA too (the stats' `lora_modules` say where it landed)
    new        the projections the MLA conversion created (NEW_MLA_PROJECTIONS)

REAR students are refused: their rank logit would need a loss of its own (an MSE against the
teacher's), which is not built.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import torch

from rearqa.config_errors import ConfigError
from rearqa.training.config import TrainConfig
from rearqa.training.data import pad_id
from rearqa.training.data.distill_rows import distill_rows
from rearqa.training.data.token_rows import StepRows, collate_chunks
from rearqa.training.losses import causal_hidden, chunked_kl_sum, rows_at

# Attention parameters the MLA conversion wrote (q_proj holds the RoRoPE-rotated queries); the
# query LoRA names (q_a_proj, q_b_proj, q_a_layernorm) are there for a student that has them.
NEW_MLA_PROJECTIONS = ("q_proj", "q_a_proj", "q_b_proj", "q_a_layernorm", "kv_a_proj_with_mqa",
                       "kv_b_proj", "kv_a_layernorm")
ATTENTION_BLOCK = "self_attn"
DISTILL_FILE = "distill.json"  # beside the saved model: the student, the teacher, what trained


def attention_part(name: str) -> str | None:
    """The module inside the attention block that parameter `name` belongs to
    ("model.layers.3.self_attn.kv_b_proj.weight" -> "kv_b_proj"); None outside attention."""
    parts = name.split(".")
    if ATTENTION_BLOCK not in parts[:-1]:
        return None
    return parts[parts.index(ATTENTION_BLOCK) + 1]


def select_trainable(model: torch.nn.Module, which: str) -> list[str]:
    """Freeze every parameter of `model` but those of `which` ("attention" | "new"); their names."""
    names = []
    for name, param in model.named_parameters():
        part = attention_part(name)
        chosen = part is not None and (which == "attention" or part in NEW_MLA_PROJECTIONS)
        param.requires_grad_(chosen)
        names += [name] if chosen else []
    if not names:
        raise ConfigError(f"train.distill_trainable={which!r}: the student has no such parameters "
                          f"(looked for {ATTENTION_BLOCK}.{{{', '.join(NEW_MLA_PROJECTIONS)}}}); "
                          "is it a converted reader?")
    return names


# ---------------------------------------------------------------------------- the two models

def student_manifest(config: TrainConfig):
    from rearqa.reader.backbone.manifest import read_manifest

    student = Path(config.student).expanduser()
    if not (student / "config.json").is_file():
        raise FileNotFoundError(f"train.student={config.student!r} holds no model (config.json); "
                                "make one with `rearqa convert --out DIR`")
    manifest = read_manifest(student)
    if (student / "rear_config.json").is_file():
        raise ConfigError(f"train.student={config.student!r} is a REAR checkpoint; distill heals "
                          "plain converted readers (its rank logit would need a loss of its own)")
    return manifest


def teacher_kind(config: TrainConfig) -> str:
    """"base", "adapter" or "model" for `config.teacher`; a clear error otherwise."""
    from rearqa.reader.backbone.loading import source_kind

    try:
        kind = source_kind(config.teacher, "train.teacher")
    except ConfigError:
        kind = None
    if kind not in ("base", "adapter", "model"):
        raise ConfigError(f"train.teacher={config.teacher!r}: not 'base', a transformers checkpoint "
                          "(config.json) or a PEFT adapter (adapter_config.json)")
    return kind


def check_teacher_matches(config: TrainConfig, manifest) -> None:
    """A student converted from an adapter needs that adapter's merged model as its teacher, and
    one converted from a plain model needs a plain one (backbone.json's `source.kind`). Paths are
    not compared: a conversion made on one machine is healed on another."""
    source = (manifest.source if manifest is not None else {}).get("kind")
    kind = teacher_kind(config)
    if source == "adapter" and kind != "adapter":
        raise ConfigError(f"train.student was converted from the adapter {manifest.source.get('path')!r}: "
                          "give that adapter dir as train.teacher (merged into the base)")
    if source in ("base", "model") and kind == "adapter":
        raise ConfigError(f"train.student was converted from a plain model "
                          f"({manifest.source.get('path')!r}), not an adapter: give that model "
                          "(or base) as train.teacher")


def load_teacher(config: TrainConfig, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """The frozen teacher on `device` (bf16 on CUDA, fp32 on CPU), and a record of it."""
    from rearqa.reader.backbone.loading import load_causal_lm

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    kind, base = teacher_kind(config), config.base_model_dir()
    if kind == "adapter":
        from rearqa.reader.finetuned import merge_lora

        # Merged in fp32, then cast: merging into bf16 weights would round the LoRA delta.
        lm = merge_lora(load_causal_lm(base, torch.float32), config.teacher).to(dtype)
        record = {"kind": kind, "path": config.teacher, "base": str(base)}
    else:
        path = base if kind == "base" else Path(config.teacher).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"teacher {str(path)!r} has no config.json; run `rearqa data "
                                    "prepare` for the bundled model")
        lm = load_causal_lm(path, dtype)
        record = {"kind": kind, "path": str(path)}
    lm.requires_grad_(False)
    return lm.eval().to(device), record


# ---------------------------------------------------------------------------- the task

class DistillTask:
    """KL(teacher || student) at every position of corpus windows and rag-ft prompts."""

    def __init__(self, config: TrainConfig, snapshot, tokenizer, student: torch.nn.Module,
                 teacher: torch.nn.Module, device: torch.device, manifest=None,
                 teacher_record: dict | None = None) -> None:
        if student.get_output_embeddings().weight.shape != teacher.get_output_embeddings().weight.shape:
            raise ConfigError("train.student and train.teacher have different vocabularies or "
                              "widths of the output layer; the student must be converted from "
                              "the teacher")
        started = time.perf_counter()  # tokenised once; a batch only collates (data.token_rows)
        self.rows, self.item_ids = distill_rows(snapshot, tokenizer, config)
        self.tokenise_seconds = time.perf_counter() - started
        self.config, self.tokenizer, self.manifest = config, tokenizer, manifest
        self.teacher, self.teacher_record = teacher, teacher_record or {}
        self.pad_token_id = pad_id(tokenizer)
        if config.distill_trainable == "lora":
            from rearqa.reader.adapters import wrap
            from rearqa.reader.adapters.lora.config import LoraSettings

            lora = LoraSettings(r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout)
            self.model = wrap("lora", student, lora).to(device)
        else:
            select_trainable(student, config.distill_trainable)
            self.model = student.to(device)
        lengths = self.lengths()
        self.stats = {"rows": len(lengths),
                      "corpus_rows": sum(i.startswith("corpus:") for i in self.item_ids),
                      "prompt_rows": sum(i.startswith("prompt:") for i in self.item_ids),
                      "mean_tokens": sum(lengths) / max(1, len(lengths)),
                      "max_tokens": max(lengths, default=0), "trainable": config.distill_trainable,
                      "trainable_parameters": sum(p.numel() for p in self.model.parameters()
                                                  if p.requires_grad)}
        if config.distill_trainable == "lora":
            self.stats["lora_modules"] = sorted({n.split(".lora_A")[0].rsplit(".", 1)[-1]
                                                 for n, _ in self.model.named_parameters()
                                                 if ".lora_A" in n})
        self.no_decay_names: list[str] = []
        self.n_items = len(lengths)
        self.items_per_micro = config.batch

    @classmethod
    def build(cls, config: TrainConfig, snapshot, device: torch.device,
              dtype: torch.dtype) -> "DistillTask":
        """Load the student (frozen parts in `dtype`, rearqa.training.precision) and the teacher."""
        from transformers import AutoTokenizer

        from rearqa.reader.backbone.loading import load_causal_lm

        manifest = student_manifest(config)
        check_teacher_matches(config, manifest)
        student_dir = Path(config.student).expanduser()
        tokenizer = AutoTokenizer.from_pretrained(student_dir)  # `rearqa convert` saves it
        teacher, record = load_teacher(config, device)
        return cls(config, snapshot, tokenizer, load_causal_lm(student_dir, dtype), teacher,
                   device, manifest, record)

    @property
    def student(self) -> torch.nn.Module:
        """The student causal LM (with its LoRA layers in it when they train)."""
        is_peft = self.config.distill_trainable == "lora"
        return self.model.get_base_model() if is_peft else self.model

    def lengths(self) -> list[int]:
        return self.rows.lengths

    def batch(self, indices: list[int], device: torch.device) -> StepRows:
        return collate_chunks(self.rows, list(indices), self.config.row_chunks, self.pad_token_id,
                              device)

    def kl(self, batch: StepRows) -> torch.Tensor:
        """Mean over the batch's positions of KL(teacher || student) (each position predicting
        the next token of its row; pads are never read)."""
        student = self.student
        with torch.no_grad():
            teacher_states = torch.cat([rows_at(causal_hidden(self.teacher, c.input_ids), c.lm_index)
                                        for c in batch.chunks])  # (positions, D)
        student_states = torch.cat([rows_at(causal_hidden(student, c.input_ids), c.lm_index)
                                    for c in batch.chunks])
        total = chunked_kl_sum(student_states, teacher_states, student.get_output_embeddings(),
                               self.teacher.get_output_embeddings(), self.config.kd_temperature,
                               self.config.kd_chunk)
        return total / max(batch.lm_tokens, 1)

    def losses(self, batch: StepRows, stage: str) -> dict:
        kl = self.kl(batch)
        return {"loss": kl, "lm": kl, "rank": kl.new_zeros(())}

    # ------------------------------------------------------------------ the result

    def save_model(self, path: Path) -> None:
        """lora: the PEFT adapter (the healed reader = the student dir + it, rearqa.reader.
        finetuned.merge_lora). attention / new: the student's full weights in its own format,
        in fp32 (a bf16 copy would round away updates below bf16's resolution), with its
        backbone.json, so that load_causal_lm(path) loads it."""
        path = Path(path)
        record = {"student": str(self.config.student), "teacher": self.teacher_record,
                  "trainable": self.config.distill_trainable,
                  "kd_temperature": self.config.kd_temperature}
        if self.config.distill_trainable == "lora":
            self.model.save_pretrained(path)
            self.tokenizer.save_pretrained(path)
        else:
            save_full_student(self.model, Path(self.config.student).expanduser(), path,
                              self.manifest, record)
        (path / DISTILL_FILE).write_text(json.dumps(record, indent=2) + "\n")


def fp32_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`model`'s state dict in fp32, tied tensors still one tensor (cast once, by storage)."""
    cast: dict[int, torch.Tensor] = {}
    out = {}
    for name, tensor in model.state_dict().items():
        key = tensor.data_ptr()
        if key not in cast:
            cast[key] = tensor.detach().float()
        out[name] = cast[key]
    return out


def save_full_student(model: torch.nn.Module, student_dir: Path, path: Path, manifest,
                      record: dict) -> None:
    """`model` written as the student dir is (weights, config, tokenizer, reports, backbone.json),
    its weights in fp32 and its backbone.json's source extended with `record`."""
    from rearqa.reader.backbone.manifest import write_manifest

    shutil.copytree(student_dir, path, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
        "*.safetensors", "*.bin", "*.index.json"))
    model.save_pretrained(path, state_dict=fp32_state_dict(model))
    config_file = path / "config.json"
    saved = json.loads(config_file.read_text())
    for key in ("dtype", "torch_dtype"):  # the weights are fp32 whatever the model held
        if key in saved:
            saved[key] = "float32"
    config_file.write_text(json.dumps(saved, indent=2) + "\n")
    if manifest is not None:
        write_manifest(path, replace(manifest, dtype="float32",
                                     source={**manifest.source, "distilled": record}))
