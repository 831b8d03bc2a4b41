"""What a loraprune run trains: LoRAPrune on the project's loop, with a distillation objective.

LoRAPrune (reader/backbone/loraprune says the method) fine-tunes a LoRA while the importance of
each attention group and MLP channel accumulates from the LoRA's gradients, and a cubic schedule
masks the least important groups until every layer keeps `prune_kv_groups` KV heads (with their
query heads) and `prune_mlp_channels` channels. Here the model pruned is the reader `teacher`
names (base, a checkpoint, or the rag-ft adapter merged into the base), and what it learns is
that same reader's next-token distribution: KL(unpruned || pruned-with-LoRA) over the corpus
windows and rag-ft prompts of the train splits, the distill task's data and loss
(rearqa.training.distill_task). The paper fine-tunes on the task's text with the LM loss; the
dense KL to the unpruned reader is the stronger recovery signal for a small reader and needs no
other data, which is why it is used here (the LM loss is not built).

The loop calls three hooks of this task (rearqa.training.train, step):

    plan_steps(total)   once the run's step count is known: the Pruner and its schedule
    after_backward()    each optimiser step, with the step's gradients complete: the LoRA
                        gradients go into the running importance (on the device, no host sync)
    after_step(step)    after the optimiser step: on a pruning step, the new mask (input gates on
                        o_proj and down_proj, so later steps train the pruned function)

and saves the Pruner's state in each checkpoint (`state_tensors` / `state_json`,
`load_state`), so a resumed run has the same importance, mask and events. The result (final/):
mask.json and importance.json, and the LoRA sliced to the kept heads and channels
(loraprune.prune.slice_lora), a PEFT adapter over the pruned reader: `rearqa convert --transform
loraprune --from SOURCE --mask final/mask.json` rebuilds the pruned reader, and the adapter
merged into it is the trained one.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from rearqa.config_errors import ConfigError
from rearqa.reader.backbone.loraprune.config import LoRAPruneConfig
from rearqa.training.config import TrainConfig
from rearqa.training.distill_task import DistillTask, load_teacher

RECORD_FILE = "loraprune.json"


def prune_config(config: TrainConfig) -> LoRAPruneConfig:
    """The run's LoRAPrune settings (prune_* keys of the train config)."""
    return LoRAPruneConfig(kv_groups=config.prune_kv_groups, mlp_channels=config.prune_mlp_channels,
                           ema=config.prune_ema, prune_start=config.prune_start,
                           prune_end=config.prune_end, prune_every=config.prune_every)


class LoRAPruneTask(DistillTask):
    """The distill task over a copy of the teacher with a LoRA, pruned on the schedule."""

    @classmethod
    def build(cls, config: TrainConfig, snapshot, device: torch.device,
              dtype: torch.dtype) -> "LoRAPruneTask":
        from transformers import AutoTokenizer

        from rearqa.training.distill_task import teacher_kind

        if teacher_kind(config) == "rear":
            raise ConfigError("train.teacher is a REAR checkpoint: loraprune prunes a plain reader "
                              "(base, a checkpoint or a rag-ft adapter)")
        teacher, record = load_teacher(config, device)
        student = copy.deepcopy(teacher).to(dtype)  # the same reader: its frozen copy gets the LoRA
        source = Path(config.teacher).expanduser() if config.teacher != "base" else None
        tokenizer_dir = (source if source is not None and (source / "tokenizer_config.json").is_file()
                         else config.base_model_dir())
        task = cls(config, snapshot, AutoTokenizer.from_pretrained(tokenizer_dir), student, teacher,
                   device, None, record)
        task.prune_cfg = prune_config(config)
        task.shape = task.prune_cfg.check_targets(student.config)
        task.pruner = None
        return task

    # ------------------------------------------------------------------ the loop's hooks

    def plan_steps(self, total: int) -> None:
        from rearqa.training.loraprune import Pruner

        self.pruner = Pruner(self.model, self.prune_cfg, total)

    def after_backward(self) -> None:
        self.pruner.after_backward()

    def after_step(self, step: int):
        """The PruneEvent of optimiser step `step` (from 1), or None."""
        return self.pruner.after_step(step)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        scores = self.pruner.tracker.scores
        if scores is None:
            return {}
        return {"attn": scores.attn.detach().cpu().contiguous(),
                "mlp": scores.mlp.detach().cpu().contiguous()}

    def state_json(self) -> dict:
        from dataclasses import asdict

        return {"mask": asdict(self.pruner.mask), "events": [asdict(e) for e in self.pruner.events]}

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Restore the importance, the events and the mask (its gates installed again)."""
        from rearqa.reader.backbone.loraprune.groups import GroupScores
        from rearqa.reader.backbone.loraprune.mask import PruneMask, install_mask
        from rearqa.training.loraprune import PruneEvent

        pruner = self.pruner
        device = next(self.model.parameters()).device
        if tensors:
            pruner.tracker.scores = GroupScores(tensors["attn"].to(device), tensors["mlp"].to(device))
        pruner.events = [PruneEvent(**e) for e in meta.get("events", [])]
        pruner.mask = PruneMask(**meta["mask"])
        pruner.lift_mask()
        if pruner.events:
            pruner._handles = install_mask(self.model, pruner.mask, self.shape)

    # ------------------------------------------------------------------ the result

    def _stats(self) -> dict:
        stats = super()._stats()
        stats["prune"] = {"kv_groups": self.config.prune_kv_groups,
                          "mlp_channels": self.config.prune_mlp_channels}
        return stats

    def save_model(self, path: Path) -> None:
        """mask.json + importance.json, the LoRA sliced to the mask as a PEFT adapter over the
        pruned reader (adapter_config.json, adapter_model.safetensors), the tokenizer and a record
        (loraprune.json: the schedule's events, whether the targets were reached)."""
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        from rearqa.reader.backbone.loraprune.prune import slice_lora

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        pruner = self.pruner
        mask = pruner.mask
        pruner.save(path)
        state = get_peft_model_state_dict(self.model)
        sliced = slice_lora({k: v.detach().float().cpu() for k, v in state.items()}, mask, self.shape)
        save_file({k: v.contiguous() for k, v in sliced.items()},
                  str(path / "adapter_model.safetensors"), metadata={"format": "pt"})
        self.model.peft_config["default"].save_pretrained(str(path))
        self.tokenizer.save_pretrained(path)
        reached = (mask.kv_groups, mask.mlp_channels) == (self.prune_cfg.kv_groups,
                                                          self.prune_cfg.mlp_channels)
        record = {"teacher": self.teacher_record, "kv_groups": mask.kv_groups,
                  "mlp_channels": mask.mlp_channels, "targets_reached": reached,
                  "targets": {"kv_groups": self.prune_cfg.kv_groups,
                              "mlp_channels": self.prune_cfg.mlp_channels},
                  "schedule": {"total_steps": pruner.total_steps, "start": pruner.start,
                               "end": pruner.end, "every": self.prune_cfg.prune_every,
                               "ema": self.prune_cfg.ema, "prune_start": self.prune_cfg.prune_start,
                               "prune_end": self.prune_cfg.prune_end},
                  "kd_temperature": self.config.kd_temperature}
        (path / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
