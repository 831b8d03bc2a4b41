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

A REAR student (a REAR checkpoint converted with `rearqa convert --from REAR_CHECKPOINT`) is
healed towards the REAR checkpoint it was converted from: the same KL, over the corpus windows
and, instead of the rag-ft prompts, its REAR inputs of the train questions, plus
`rank_mse_weight` x the MSE between the two rank logits at <GENERATE_SCORE>
(rearqa.training.distill_rear, which says why the rank head and REAR rows stay frozen). The
same three choices train; the result loads back as a REAR reader (rearqa.training.distill_result).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from rearqa.config_errors import ConfigError
from rearqa.training.config import TrainConfig
from rearqa.training.data import pad_id
from rearqa.training.data.distill_rows import distill_rows
from rearqa.training.data.token_rows import StepRows, collate_chunks
from rearqa.training.distill_result import DISTILL_FILE, save_full_student
from rearqa.training.losses import causal_hidden, chunked_kl_sum, rows_at

# Attention parameters the MLA conversion wrote (q_proj holds the RoRoPE-rotated queries); the
# query LoRA names (q_a_proj, q_b_proj, q_a_layernorm) are there for a student that has them.
NEW_MLA_PROJECTIONS = ("q_proj", "q_a_proj", "q_b_proj", "q_a_layernorm", "kv_a_proj_with_mqa",
                       "kv_b_proj", "kv_a_layernorm")
ATTENTION_BLOCK = "self_attn"


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

def is_rear_dir(path: str | Path) -> bool:
    return (Path(path).expanduser() / "rear_config.json").is_file()


def student_manifest(config: TrainConfig):
    from rearqa.reader.backbone.manifest import read_manifest

    student = Path(config.student).expanduser()
    if not (student / "config.json").is_file():
        raise FileNotFoundError(f"train.student={config.student!r} holds no model (config.json); "
                                "make one with `rearqa convert --out DIR`")
    return read_manifest(student)


def teacher_kind(config: TrainConfig) -> str:
    """"base", "adapter", "model" or "rear" for `config.teacher`; a clear error otherwise."""
    from rearqa.reader.backbone.loading import source_kind

    try:
        return source_kind(config.teacher, "train.teacher")
    except ConfigError:
        raise ConfigError(f"train.teacher={config.teacher!r}: not 'base', a transformers checkpoint "
                          "(config.json), a PEFT adapter (adapter_config.json) or a REAR "
                          "checkpoint (rear_config.json)") from None


def check_teacher_matches(config: TrainConfig, manifest) -> None:
    """A student converted from an adapter needs that adapter's merged model as its teacher, one
    converted from a plain model a plain one, and a REAR student (rear_config.json; backbone.json
    `source.kind` "rear") the REAR checkpoint it was converted from (`source.kind`). Paths are
    not compared: a conversion made on one machine is healed on another."""
    source = (manifest.source if manifest is not None else {}).get("kind")
    kind, rear_student = teacher_kind(config), is_rear_dir(config.student)
    where = f" ({manifest.source.get('path')!r})" if manifest is not None else ""
    if (rear_student or source == "rear") and kind != "rear":
        raise ConfigError(f"train.student is a REAR reader{where}: give the REAR checkpoint it was "
                          f"converted from as train.teacher, not {config.teacher!r} ({kind}); its "
                          "rank logit is distilled too")
    if source == "rear" and not rear_student:
        raise ConfigError(f"train.student was converted from the REAR checkpoint{where} but has no "
                          "rear_config.json; convert it again with `rearqa convert --from` it")
    if kind == "rear" and not rear_student:
        raise ConfigError(f"train.teacher={config.teacher!r} is a REAR checkpoint but train.student "
                          "is not: a REAR teacher heals a REAR student (`rearqa convert --from "
                          "REAR_CHECKPOINT`); a plain student takes base, a checkpoint or an adapter")
    if source == "adapter" and kind != "adapter":
        raise ConfigError(f"train.student was converted from the adapter {manifest.source.get('path')!r}: "
                          "give that adapter dir as train.teacher (merged into the base)")
    if source in ("base", "model") and kind == "adapter":
        raise ConfigError(f"train.student was converted from a plain model{where}, not an adapter: "
                          "give that model (or base) as train.teacher")


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
    """KL(teacher || student) at every position of corpus windows and prompts; for a REAR
    student (`student` and `teacher` given as RearModels) plus the rank logits' MSE."""

    def __init__(self, config: TrainConfig, snapshot, tokenizer, student: torch.nn.Module,
                 teacher: torch.nn.Module, device: torch.device, manifest=None,
                 teacher_record: dict | None = None) -> None:
        from rearqa.reader.rear.model import RearModel

        self.student_rear = student if isinstance(student, RearModel) else None
        self.teacher_rear = teacher if isinstance(teacher, RearModel) else None
        if (self.student_rear is None) != (self.teacher_rear is None):
            raise ConfigError("train.student and train.teacher must both be REAR readers or both "
                              "plain ones")
        if self.student_rear is not None:
            from rearqa.training.distill_rear import check_rear_pair

            check_rear_pair(self.student_rear, self.teacher_rear)
            student, teacher = self.student_rear.causal_lm, self.teacher_rear.causal_lm
        if student.get_output_embeddings().weight.shape != teacher.get_output_embeddings().weight.shape:
            raise ConfigError("train.student and train.teacher have different vocabularies or "
                              "widths of the output layer; the student must be converted from "
                              "the teacher")
        started = time.perf_counter()  # tokenised once; a batch only collates (data.token_rows)
        self.parts, self.item_ids = self._rows(config, snapshot, tokenizer)
        self.tokenise_seconds = time.perf_counter() - started
        # item i of the run -> (its part, its row in that part)
        self.item_rows = [(k, r) for k, part in enumerate(self.parts) for r in range(len(part))]
        self.config, self.tokenizer, self.manifest = config, tokenizer, manifest
        self.teacher, self.teacher_record = teacher, teacher_record or {}
        self.pad_token_id = pad_id(tokenizer)
        self.model = self._trainable_student(student, config).to(device)
        if self.student_rear is not None:
            self.student_rear.to(device)  # its rank head (the LM is self.model's)
        self.stats = self._stats()
        self.no_decay_names: list[str] = []
        self.n_items = len(self.item_rows)
        self.items_per_micro = config.batch

    def _rows(self, config: TrainConfig, snapshot, tokenizer):
        """The corpus windows and the prompts (a REAR student: its REAR inputs), one TokenRows per
        kind (rearqa.training.data.distill_rows), and their ids."""
        if self.student_rear is None:
            return distill_rows(snapshot, tokenizer, config)
        from functools import partial

        from rearqa.training.distill_rear import rear_data_config, rear_prompt_rows

        prompts = partial(rear_prompt_rows, passage_masks=self.student_rear.rank_head is not None)
        return distill_rows(snapshot, tokenizer, rear_data_config(config, self.student_rear),
                            prompts=prompts)

    @staticmethod
    def _trainable_student(student: torch.nn.Module, config: TrainConfig) -> torch.nn.Module:
        """The student with only `distill_trainable` trainable: LoRA-wrapped (PEFT) for lora.
        Neither choice reaches the embeddings or the output layer (nor a REAR student's rows)."""
        if config.distill_trainable != "lora":
            select_trainable(student, config.distill_trainable)
            return student
        from rearqa.reader.adapters import wrap

        return wrap(config.adapter, student, config.adapter_settings())

    def _stats(self) -> dict:
        lengths, ids = self.lengths(), self.item_ids
        stats = {"rows": len(lengths), "corpus_rows": sum(i.startswith("corpus:") for i in ids),
                 "prompt_rows": sum(i.startswith("prompt:") for i in ids),
                 "rear_rows": sum(i.startswith("rear:") for i in ids),
                 "mean_tokens": sum(lengths) / max(1, len(lengths)),
                 "max_tokens": max(lengths, default=0), "trainable": self.config.distill_trainable,
                 "trainable_parameters": sum(p.numel() for p in self.model.parameters()
                                             if p.requires_grad)}
        if self.student_rear is not None:
            stats["rank_head"] = self.student_rear.config.head
            stats["rank_mse_weight"] = self.config.rank_mse_weight
        if self.config.distill_trainable == "lora":
            stats["lora_modules"] = sorted({n.split(".lora_A")[0].rsplit(".", 1)[-1]
                                            for n, _ in self.model.named_parameters()
                                            if ".lora_A" in n})
        return stats

    @classmethod
    def build(cls, config: TrainConfig, snapshot, device: torch.device,
              dtype: torch.dtype) -> "DistillTask":
        """Load the student (frozen parts in `dtype`, rearqa.training.precision) and the teacher;
        as RearModels when the student is a REAR checkpoint."""
        from transformers import AutoTokenizer

        from rearqa.reader.backbone.loading import load_causal_lm

        manifest = student_manifest(config)
        check_teacher_matches(config, manifest)
        student_dir = Path(config.student).expanduser()
        if is_rear_dir(student_dir):
            from rearqa.training.distill_rear import load_rear_student, load_rear_teacher

            student = load_rear_student(student_dir, dtype)
            teacher, record = load_rear_teacher(config, device)
            return cls(config, snapshot, student.tokenizer, student, teacher, device, manifest,
                       record)
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
        return [n for part in self.parts for n in part.lengths]

    def batch(self, indices: list[int], device: torch.device) -> StepRows:
        """The items `indices` collated part by part (only REAR inputs have score positions);
        the chunks of all parts in one StepRows. The losses are sums over rows and positions,
        so the micro-batch's row order is not kept (`order` None)."""
        steps = []
        for k, part in enumerate(self.parts):
            rows = [r for part_k, r in (self.item_rows[i] for i in indices) if part_k == k]
            if rows:
                steps.append(collate_chunks(part, rows, self.config.row_chunks, self.pad_token_id,
                                            device))
        return StepRows([c for s in steps for c in s.chunks], None, sum(s.tokens for s in steps),
                        sum(s.padded_tokens for s in steps), sum(s.lm_tokens for s in steps))

    def distances(self, batch: StepRows) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean over the batch's positions of KL(teacher || student), each position predicting
        the next token of its row (pads are never read); mean over its REAR inputs of the squared
        difference of the rank logits, 0 without any)."""
        student = self.student
        student_states, teacher_states, student_ranks, teacher_ranks = [], [], [], []
        for c in batch.chunks:
            with torch.no_grad():
                teacher_hidden = causal_hidden(self.teacher, c.input_ids)  # (n, T, D)
            student_hidden = causal_hidden(student, c.input_ids)
            teacher_states.append(rows_at(teacher_hidden, c.lm_index))  # (positions, D)
            student_states.append(rows_at(student_hidden, c.lm_index))
            if c.score_index is not None:
                with torch.no_grad():
                    teacher_ranks.append(self.teacher_rear.rank_logits(
                        teacher_hidden, c.positions, None, c.passage_mask))
                student_ranks.append(self.student_rear.rank_logits(
                    student_hidden, c.positions, None, c.passage_mask))
        total = chunked_kl_sum(torch.cat(student_states), torch.cat(teacher_states),
                               student.get_output_embeddings(),
                               self.teacher.get_output_embeddings(), self.config.kd_temperature,
                               self.config.kd_chunk)
        kl = total / max(batch.lm_tokens, 1)
        if not student_ranks:
            return kl, kl.new_zeros(())
        return kl, F.mse_loss(torch.cat(student_ranks).float(), torch.cat(teacher_ranks).float())

    def kl(self, batch: StepRows) -> torch.Tensor:
        """The KL part of `distances`."""
        return self.distances(batch)[0]

    def rank_mse(self, batch: StepRows) -> torch.Tensor:
        """The rank-logit part of `distances` (0 for a plain student)."""
        return self.distances(batch)[1]

    def losses(self, batch: StepRows, stage: str) -> dict:
        kl, rank = self.distances(batch)
        loss = kl + self.config.rank_mse_weight * rank if self.student_rear is not None else kl
        return {"loss": loss, "lm": kl, "rank": rank}

    # ------------------------------------------------------------------ the result

    def save_model(self, path: Path) -> None:
        """rearqa.training.distill_result: lora writes the PEFT adapter (a REAR student's healed
        reader: distill_result.merge_rear_student); attention / new the student's full weights
        in fp32 with its backbone.json (and a REAR student's REAR files), loading by path."""
        path = Path(path)
        record = {"student": str(self.config.student), "teacher": self.teacher_record,
                  "trainable": self.config.distill_trainable,
                  "kd_temperature": self.config.kd_temperature}
        if self.student_rear is not None:
            record["rank_mse_weight"] = self.config.rank_mse_weight
        if self.config.distill_trainable == "lora":
            self.model.save_pretrained(path)
            self.tokenizer.save_pretrained(path)
        else:
            save_full_student(self.model, Path(self.config.student).expanduser(), path,
                              self.manifest, record, self.student_rear)
        (path / DISTILL_FILE).write_text(json.dumps(record, indent=2) + "\n")
