"""A REAR reader as the distill student: its rank logit held to its teacher's by an MSE.

A REAR reader (rearqa.reader.rear) judges a passage by one relevance logit read at
<GENERATE_SCORE>: the <RANK_SCORE> - <RANK_REF> output rows (linear head) or the lowrank_attn
module. The vocabulary KL barely constrains it: those two rows carry almost none of the
softmax mass, so the student's state at <GENERATE_SCORE> can drift along them while the KL
stays small. A converted REAR checkpoint (`rearqa convert --from REAR_CHECKPOINT`) is healed
with (issue 12)

    loss = KL(teacher || student) + rank_mse_weight * mean over REAR inputs of (s - t)^2

s and t being the student's and the teacher's rank logits on the same REAR input. The REAR
inputs are the train questions' groups built exactly as REAR training builds them
(rearqa.training.rear_task: rear_groups, rear_token_rows), in the prompt format the checkpoint
is served with (its rear_config.json's use_chat_template and question_first, not the train
config's); the KL runs over every position of them too, and over the corpus windows. They are
not cut to distill_max_len (that would cut off <GENERATE_SCORE>): max_passage_tokens etc. bound
them, as in REAR training.

The teacher is the REAR checkpoint the student was converted from, its LoRA merged (in fp32,
then cast), frozen. The student's rank head (the two output rows, or the lowrank_attn module)
and its REAR token rows stay frozen: they are the teacher's own, copied by the conversion, so
a student whose final states match the teacher's gives the teacher's rank logits through them;
training them would let the score position fit the teacher's logit with its own weights while
the states the answer is generated from stay where the conversion left them.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from rearqa.config_errors import ConfigError
from rearqa.training.config import TrainConfig
from rearqa.training.data.token_rows import TokenRows


def load_rear_student(student_dir: Path, dtype: torch.dtype):
    """The converted REAR checkpoint in `student_dir` as a RearModel (weights in `dtype`), its
    rank head frozen (the module docstring says why)."""
    from rearqa.reader.rear.model import RearModel

    rear = RearModel.from_pretrained(student_dir, dtype=dtype)
    if rear.rank_head is not None:
        rear.rank_head.requires_grad_(False)
    return rear


def load_rear_teacher(config: TrainConfig, device: torch.device):
    """The REAR checkpoint `config.teacher` as a frozen RearModel on `device` (bf16 on CUDA, fp32
    on the CPU) with any LoRA merged, and a record of it. A LoRA checkpoint's base is
    `config.base_model_dir()`, as `rearqa convert` reads it."""
    from rearqa.reader.rear.model import RearModel

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    base = config.base_model_dir()
    # Merged in fp32, then cast: merging into bf16 weights would round the LoRA delta.
    rear = RearModel.from_pretrained(config.teacher, base_model_dir=base, dtype=torch.float32)
    rear.export_linear_head()
    if rear.is_lora:
        rear.lm = rear.lm.merge_and_unload()
    rear.requires_grad_(False)
    record = {"kind": "rear", "path": str(config.teacher), "base": str(base)}
    return rear.to(dtype).eval().to(device), record


def check_rear_pair(student, teacher) -> None:
    """The student must be converted from the teacher: the same REAR tokens, head and prompt."""
    s, t = student, teacher
    checks = {"token ids": (s.token_ids.to_dict(), t.token_ids.to_dict()),
              "rank head": (s.config.head, t.config.head),
              "base vocabulary": (s.base_vocab_size, t.base_vocab_size),
              "prompt format (use_chat_template, question_first)": (
                  (s.config.use_chat_template, s.config.question_first),
                  (t.config.use_chat_template, t.config.question_first))}
    for what, (mine, theirs) in checks.items():
        if mine != theirs:
            raise ConfigError(f"train.student and train.teacher differ in their REAR {what} "
                              f"({mine} vs {theirs}); give as teacher the REAR checkpoint the "
                              "student was converted from")


def rear_data_config(config: TrainConfig, student) -> TrainConfig:
    """`config` with the REAR prompt format of the `student` checkpoint (what it is served with)."""
    return replace(config, chat_template=student.config.use_chat_template,
                   question_first=student.config.question_first)


def rear_prompt_rows(snapshot, tokenizer, config: TrainConfig,
                     passage_masks: bool = False) -> tuple[TokenRows, list[str]]:
    """The REAR input of every passage of every REAR training group of `config` (train splits
    only), tokenised as REAR training does, every token carrying the KL; ids
    "rear:<group id>:<passage index>". `passage_masks`: keep them (the lowrank_attn head pools
    over them)."""
    from rearqa.training.rear_task import rear_groups, rear_token_rows

    groups = rear_groups(config, snapshot)
    if not groups:
        return TokenRows.from_lists([], [], None, []), []
    rows = rear_token_rows(groups, tokenizer, config, passage_masks)
    # KL at every position (collate_chunks skips each row's first token): not only the answer's.
    rows = replace(rows, label_mask=torch.ones_like(rows.label_mask))
    return rows, [f"rear:{g.id}:{k}" for g in groups for k in range(len(g.passages))]
