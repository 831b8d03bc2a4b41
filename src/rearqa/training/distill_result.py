"""What a distill run writes: the healed student, in the form its reader loads by path.

    attention / new   the student's full weights in its own format (backbone.json, tokenizer,
                      reports), fp32; a REAR student's REAR files too (rear_config.json, its
                      rank head), so RearModel.from_pretrained / reader.checkpoint reads it
    lora              the PEFT adapter. The healed reader is the student dir with it merged:
                      rearqa.reader.finetuned.merge_lora for a plain student; for a REAR
                      student `merge_rear_student(student, adapter, out)`, which writes the
                      full REAR checkpoint the other two choices write
"""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import torch

DISTILL_FILE = "distill.json"  # beside the saved model: the student, the teacher, what trained


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
                      record: dict, rear=None) -> None:
    """`model` written as the student dir is (weights, config, tokenizer, reports, backbone.json),
    its weights in fp32 and its backbone.json's source extended with `record`; `rear`: the
    student's RearModel, whose REAR files (rear_config.json, tokenizer, rank head) go beside."""
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
    if rear is not None:
        from rearqa.reader.rear.checkpoint import write_rear_files

        write_rear_files(rear, model, path)  # the head file was left out of the copy above


def merge_rear_student(student_dir: str | Path, adapter_dir: str | Path, out: str | Path) -> Path:
    """The healed REAR reader of a lora run: the converted REAR checkpoint `student_dir` with the
    run's adapter `adapter_dir` merged (in fp32), written to `out` as a full REAR checkpoint
    (RearModel.from_pretrained(out) or reader.checkpoint reads it); returns `out`."""
    from rearqa.reader.backbone.manifest import read_manifest
    from rearqa.reader.finetuned import merge_lora
    from rearqa.reader.rear.model import RearModel

    student_dir, adapter_dir, out = Path(student_dir), Path(adapter_dir), Path(out)
    rear = RearModel.from_pretrained(student_dir, dtype=torch.float32)
    lm = merge_lora(rear.causal_lm, adapter_dir)
    record_file = adapter_dir / DISTILL_FILE
    record = (json.loads(record_file.read_text()) if record_file.is_file() else {})
    record = {**record, "adapter": str(adapter_dir)}
    save_full_student(lm, student_dir, out, read_manifest(student_dir), record, rear)
    (out / DISTILL_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return out
