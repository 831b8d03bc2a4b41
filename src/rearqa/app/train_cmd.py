"""`rearqa train ...`: REAR training and its two fine-tuned baselines (rearqa.training).

    rearqa train rear --config run.yaml --out runs/rear
    rearqa train rag-ft --config run.yaml --out runs/rag-ft --token-budget-from runs/rear/train_log.jsonl
    rearqa train closed-book-ft --config run.yaml --out runs/cb-ft --token-budget-from runs/rear/train_log.jsonl
    rearqa train distill --student readers/mla96 --teacher base --trainable lora -c configs/train/distill.yaml --out runs/distill
    python -m rearqa.app.train_cmd rear ...          (the same, without the main CLI)

A YAML file fills `rearqa.training.config.TrainConfig` (its keys, at the top level or under
`train:`); an adapter recipe (`--recipe lora-attention`, configs/adapters/) overrides its adapter
keys, and --set and options override both. Run the same command again to resume from the newest checkpoint
in --out; `--time-limit` / `--stop-after` end a call early (with a checkpoint) for machines that
limit how long one command may run.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from rearqa.environment import set_offline_defaults

set_offline_defaults()

train_app = typer.Typer(help="Train the REAR reader, the rag-ft / closed-book-ft baselines, or "
                        "heal a converted reader by distillation.",
                        no_args_is_help=True, pretty_exceptions_enable=False)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML with TrainConfig keys.")]
SnapshotOpt = Annotated[Optional[str], typer.Option(help="Retrieval snapshot dir (python -m rearqa.eval.bundle).")]
OutOpt = Annotated[Optional[str], typer.Option(help="Output dir; an existing run there is resumed.")]
BaseOpt = Annotated[Optional[str], typer.Option("--base-model", help="Base checkpoint dir (default: bundled SmolLM2).")]
StepsOpt = Annotated[Optional[int], typer.Option(help="Main-stage optimiser steps.")]
BaselineStepsOpt = Annotated[Optional[int], typer.Option(
    help="Without a token budget: train warmup_stage_steps + steps steps, as a rear run would.")]
WarmupOpt = Annotated[Optional[int], typer.Option("--warmup-steps", help="Warm-up stage steps (pointwise rank loss).")]
QuestionsOpt = Annotated[Optional[int], typer.Option("--max-questions", help="First N questions of each split (0 = all).")]
SeedOpt = Annotated[Optional[int], typer.Option(help="Seed: data order, LoRA init, dropout.")]
DeviceOpt = Annotated[Optional[str], typer.Option(help="auto | cpu | cuda | cuda:N")]
ThreadsOpt = Annotated[Optional[int], typer.Option(help="Torch CPU threads (0 = default).")]
SaveOpt = Annotated[Optional[int], typer.Option("--save-every", help="Checkpoint every N steps.")]
StopOpt = Annotated[Optional[int], typer.Option("--stop-after", help="End this call after N steps (resumable).")]
TimeOpt = Annotated[Optional[float], typer.Option("--time-limit", help="End this call after S seconds of training (resumable).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress bar.")]
BudgetFromOpt = Annotated[Optional[str], typer.Option("--token-budget-from", help="A finished REAR run's train_log.jsonl: train for as many tokens.")]
BudgetOpt = Annotated[Optional[int], typer.Option("--token-budget", help="Stop once this many training tokens are seen.")]
BatchOpt = Annotated[Optional[int], typer.Option(help="Groups per micro-batch (baselines: x group_size examples).")]
# distill / loraprune: a backbone run's length and micro-batch
BackboneStepsOpt = Annotated[Optional[int], typer.Option(help="Optimiser steps (without a token budget).")]
SequencesOpt = Annotated[Optional[int], typer.Option(help="Sequences per micro-batch.")]
AdapterOpt = Annotated[Optional[str], typer.Option(
    help="LoRA-family method: lora | hydra | dvlora | blocklora | masa (its own settings: --set adapter_options=...).")]
AccumOpt = Annotated[Optional[int], typer.Option("--grad-accum", help="Micro-batches per optimiser step (same step, less memory).")]
RecipeOpt = Annotated[Optional[str], typer.Option(
    "--recipe", help="Adapter recipe: a name in configs/adapters/ (lora-all-linear, lora-attention, "
    "hydra, ...) or a YAML path; its keys override --config, --set and options override it.")]
SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", help="KEY=VALUE: any TrainConfig setting, VALUE read as YAML (repeatable; "
    "applied after the YAML file, before the named options).")]


_EXPONENT_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def parse_sets(items: list[str] | None) -> dict[str, object]:
    """`--set` items as settings: `lr=1.0e-4` -> {"lr": 0.0001}; the value is read as YAML."""
    import yaml

    from rearqa.config_errors import ConfigError

    settings: dict[str, object] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set judgment_loss=none")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not YAML ({exc})") from exc
        if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value):
            value = float(value)  # PyYAML reads 1e-4 as a string; a number was meant
        settings[key] = value
    return settings


def merged_settings(sets: list[str] | None, named: dict[str, object]) -> dict[str, object]:
    """`--set` items, then the named options that were given (a named option wins)."""
    return {**parse_sets(sets), **{k: v for k, v in named.items() if v is not None}}


def _yaml_method(path: Path | None) -> str | None:
    """The `method` a YAML file names, if any (so a command cannot silently override it)."""
    from rearqa.config_base import read_yaml

    if path is None or not path.is_file():
        return None
    data = read_yaml(path)
    data = data["train"] if set(data) == {"train"} and isinstance(data["train"], dict) else data
    return data.get("method")


def run_settings(sets: list[str] | None, recipe: str | None, named: dict[str, object]) -> dict[str, object]:
    """What overrides the --config file: the adapter recipe's keys, then `merged_settings`."""
    from rearqa.training.config import read_adapter_recipe

    return {**(read_adapter_recipe(recipe) if recipe else {}), **merged_settings(sets, named)}


def _run(method: str, config: Path | None, stop_after: int | None, time_limit: float | None,
         quiet: bool, sets: list[str] | None = None, recipe: str | None = None,
         **overrides: object) -> None:
    from rearqa.config_errors import ConfigError
    from rearqa.training.config import TrainConfig
    from rearqa.training.train import train

    named = _yaml_method(config)
    if named is not None and named != method:
        raise ConfigError(f"{config} is a {named!r} config but the command is `train {method}`; "
                          f"run `train {named}` or change method: in the file")
    cfg = TrainConfig.from_yaml(config, method=method, **run_settings(sets, recipe, overrides))
    path = train(cfg, progress=not quiet, stop_after_steps=stop_after, time_limit_s=time_limit,
                 echo=typer.echo)
    typer.echo(f"{'final model' if path.name == 'final' else 'checkpoint'}: {path}")


@train_app.command("rear")
def rear(config: ConfigOpt = None, snapshot: SnapshotOpt = None, out: OutOpt = None,
         base_model: BaseOpt = None, steps: StepsOpt = None, warmup_steps: WarmupOpt = None,
         max_questions: QuestionsOpt = None, seed: SeedOpt = None, device: DeviceOpt = None,
         threads: ThreadsOpt = None, save_every: SaveOpt = None, stop_after: StopOpt = None,
         time_limit: TimeOpt = None, quiet: QuietOpt = False, batch: BatchOpt = None,
         grad_accum: AccumOpt = None, sets: SetOpt = None, adapter: AdapterOpt = None,
         recipe: RecipeOpt = None,
         head: Annotated[Optional[str], typer.Option(
             help="Rank head: linear (vLLM-servable) | lowrank_attn.")] = None,
         count_tokens: Annotated[Optional[list[int]], typer.Option(
             "--count-tokens", help="Train nothing: print the tokens the run will have seen "
             "after step N (repeatable; 0 = the last step), the baselines' --token-budget.")] = None,
         ) -> None:
    """REAR: LM loss + bi-granularity rank loss over passage groups, after a pointwise warm-up."""
    settings = dict(snapshot=snapshot, out=out, base_model=base_model, steps=steps,
                    warmup_stage_steps=warmup_steps, max_questions=max_questions, seed=seed,
                    device=device, threads=threads, save_every=save_every, batch=batch,
                    grad_accum=grad_accum, rear_head=head, adapter=adapter)
    if count_tokens:
        from rearqa.training.config import TrainConfig
        from rearqa.training.train import rear_token_count

        cfg = TrainConfig.from_yaml(config, method="rear", **run_settings(sets, recipe, settings))
        steps_wanted = [n or cfg.total_steps for n in count_tokens]
        for step, tokens in rear_token_count(cfg, steps_wanted).items():
            typer.echo(f"step {step}: {tokens} tokens")
        return
    _run("rear", config, stop_after, time_limit, quiet, sets, recipe, **settings)


def _baseline(method: str):
    def command(config: ConfigOpt = None, snapshot: SnapshotOpt = None, out: OutOpt = None,
                base_model: BaseOpt = None, token_budget_from: BudgetFromOpt = None,
                token_budget: BudgetOpt = None, steps: BaselineStepsOpt = None,
                max_questions: QuestionsOpt = None, seed: SeedOpt = None,
                device: DeviceOpt = None, threads: ThreadsOpt = None, save_every: SaveOpt = None,
                stop_after: StopOpt = None, time_limit: TimeOpt = None,
                quiet: QuietOpt = False, batch: BatchOpt = None,
                grad_accum: AccumOpt = None, sets: SetOpt = None, adapter: AdapterOpt = None,
                recipe: RecipeOpt = None) -> None:
        _run(method, config, stop_after, time_limit, quiet, sets, recipe, snapshot=snapshot, out=out,
             base_model=base_model, token_budget_from=token_budget_from,
             token_budget=token_budget, steps=steps, max_questions=max_questions, seed=seed,
             device=device, threads=threads, save_every=save_every, batch=batch,
             grad_accum=grad_accum, adapter=adapter)
    return command


train_app.command("rag-ft", help="Standard RAG (dense top-k in the chat prompt), LoRA, LM loss "
                  "on the answer, for a REAR run's token count.")(_baseline("rag-ft"))
train_app.command("closed-book-ft", help="The same fine-tune with no passages in the prompt.")(
    _baseline("closed-book-ft"))


@train_app.command("distill")
def distill(student: Annotated[Optional[str], typer.Option(
                help="Converted reader dir (rearqa convert --out DIR).")] = None,
            teacher: Annotated[Optional[str], typer.Option(
                help="The reader it was converted from: base | checkpoint dir | adapter dir | REAR checkpoint dir.")] = None,
            trainable: Annotated[Optional[str], typer.Option(
                help="What of the student trains: attention | lora | new (MLA projections).")] = None,
            config: ConfigOpt = None, snapshot: SnapshotOpt = None, out: OutOpt = None,
            base_model: BaseOpt = None, token_budget: BudgetOpt = None,
            steps: BackboneStepsOpt = None,
            max_questions: QuestionsOpt = None, seed: SeedOpt = None, device: DeviceOpt = None,
            threads: ThreadsOpt = None, save_every: SaveOpt = None, stop_after: StopOpt = None,
            time_limit: TimeOpt = None, quiet: QuietOpt = False,
            batch: SequencesOpt = None,
            grad_accum: AccumOpt = None, sets: SetOpt = None, recipe: RecipeOpt = None) -> None:
    """Heal a converted reader: KL(teacher || student) at every position of corpus windows and
    rag-ft prompts of the train splits; a converted REAR reader: its REAR inputs instead, plus
    rank_mse_weight x the rank logits' MSE (rearqa.training.distill_task)."""
    _run("distill", config, stop_after, time_limit, quiet, sets, recipe, student=student,
         teacher=teacher, distill_trainable=trainable, snapshot=snapshot, out=out,
         base_model=base_model, token_budget=token_budget, steps=steps,
         max_questions=max_questions, seed=seed, device=device, threads=threads,
         save_every=save_every, batch=batch, grad_accum=grad_accum)


@train_app.command("loraprune")
def loraprune(teacher: Annotated[Optional[str], typer.Option(
                  help="The reader to prune: base | checkpoint dir | adapter dir (rag-ft, merged).")] = None,
              kv_groups: Annotated[Optional[int], typer.Option(
                  help="KV heads each layer keeps (with their query heads), e.g. 2 of SmolLM2's 3.")] = None,
              mlp_channels: Annotated[Optional[int], typer.Option(
                  help="MLP channels each layer keeps, e.g. 1024 of 1536.")] = None,
              config: ConfigOpt = None, snapshot: SnapshotOpt = None, out: OutOpt = None,
              base_model: BaseOpt = None, token_budget: BudgetOpt = None,
              steps: BackboneStepsOpt = None,
              max_questions: QuestionsOpt = None, seed: SeedOpt = None, device: DeviceOpt = None,
              threads: ThreadsOpt = None, save_every: SaveOpt = None, stop_after: StopOpt = None,
              time_limit: TimeOpt = None, quiet: QuietOpt = False,
              batch: SequencesOpt = None,
              grad_accum: AccumOpt = None, sets: SetOpt = None) -> None:
    """LoRAPrune: a LoRA learns the reader's own distribution (the distill data and KL) while the
    least important attention groups and MLP channels are pruned on a cubic schedule; final/ holds
    mask.json and the LoRA over the pruned reader (rearqa.training.loraprune_task)."""
    _run("loraprune", config, stop_after, time_limit, quiet, sets, teacher=teacher,
         prune_kv_groups=kv_groups, prune_mlp_channels=mlp_channels, snapshot=snapshot, out=out,
         base_model=base_model, token_budget=token_budget, steps=steps, max_questions=max_questions,
         seed=seed, device=device, threads=threads, save_every=save_every, batch=batch,
         grad_accum=grad_accum)


def main() -> None:
    from rearqa.config_errors import ConfigError

    try:
        train_app()
    except (ConfigError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
