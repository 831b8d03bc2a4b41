"""Training REAR and its fine-tuned baselines (rag-ft, closed-book-ft); healing a converted reader.

    config       TrainConfig, and TASKS: method -> what is trained
    data         training examples from a retrieval snapshot (groups, REAR inputs, chat examples,
                 distill rows)
    losses       LM loss, REAR's bi-granularity rank loss, the chunked distillation KL
    rear_task    RearTask, and the REAR run's token count (the baselines' budget)
    chat_task    RagTask, ClosedBookTask
    distill_task DistillTask: a converted reader (student) healed towards its source (teacher)
    distill_rear a REAR student: its REAR inputs, the rank-logit MSE, loading the pair
    distill_result what a distill run writes; merge_rear_student for a REAR student's adapter
    schedule     stages, learning-rate schedule, data order, token budget
    checkpoint   pickle-free checkpoints;  run_files: what a run writes under `out`
    precision    device, autocast, the frozen base's dtype, fp32 trainable parameters
    step         one optimiser step with no host sync
    train        the resumable loop
    norms        norm monitoring: max |X W_Q|, max |X W_K| per layer against sqrt(log L), and its plot
    benchmark    training throughput (scripts/bench_train.py)
"""

# Exports, imported on first use so that `import rearqa.training.losses` stays light:
#     from rearqa.training import TrainConfig, train
#     train(TrainConfig(method="rear", snapshot="build/bundle", out="runs/rear"))
from __future__ import annotations

from rearqa.registry import lazy_attributes

_EXPORTS = {
    "TrainConfig": "rearqa.training.config",
    "ConfigMismatchError": "rearqa.training.config",
    "TrainGroup": "rearqa.training.data.groups",
    "build_groups": "rearqa.training.data.groups",
    "generation_examples": "rearqa.training.data.rear_examples",
    "rag_examples": "rearqa.training.data.chat_examples",
    "closed_book_examples": "rearqa.training.data.chat_examples",
    "group_stats": "rearqa.training.data.rear_examples",
    "train": "rearqa.training.train",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_attributes(__name__, _EXPORTS)
