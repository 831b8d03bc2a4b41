"""The `rearqa` command line: data preparation, indexing, asking, evaluation, the chat UI and the
HTTP API.

User errors (a bad question, a missing file, a bad setting, a corrupt index) print one clear
`error:` line and exit with status 2; anything unexpected keeps its traceback.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from rearqa.environment import LOG_LEVELS, configure_logging, set_offline_defaults

set_offline_defaults()
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

app = typer.Typer(help="rearqa: relevance-aware retrieval-augmented question answering.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Prepare the offline models and data sets.", no_args_is_help=True)
index_app = typer.Typer(help="Add, delete and inspect documents in a collection.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(index_app, name="index")
# The training commands live with their options in train_cmd (also runnable on its own there).
from rearqa.app.train_cmd import train_app  # noqa: E402

app.add_typer(train_app, name="train")
from rearqa.app.inspect_cmd import inspect_app  # noqa: E402

app.add_typer(inspect_app, name="inspect")


@app.callback()
def _logging(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO: what loads, from where (libraries included).")] = False,
             log_level: Annotated[Optional[str], typer.Option(help=f"Log level: {' | '.join(LOG_LEVELS)} (default $REARQA_LOG, else WARNING).")] = None) -> None:
    """rearqa: relevance-aware retrieval-augmented question answering."""
    configure_logging(log_level or ("INFO" if verbose else None))

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config file (configs/*.yaml).")]
HomeOpt = Annotated[Optional[Path], typer.Option("--home", help="Data directory (default $REARQA_HOME or ~/.cache/rearqa).")]
CollectionOpt = Annotated[Optional[str], typer.Option("--collection", help="Collection name (default from config: wiki).")]
ReaderOpt = Annotated[Optional[Path], typer.Option(
    "--reader", help="A reader directory: a transformers checkpoint or a converted reader (rearqa "
    "convert) as reader.model, or a REAR checkpoint as reader.checkpoint.")]

TPShardsOpt = Annotated[int, typer.Option(
    "--tp-shards", help="TPLA: decode a converted MLA reader with its latent split into this many "
    "shards, simulated in one process (engine hf; prefill stays full MLA). 0: off.")]
TPRotationOpt = Annotated[str, typer.Option(
    "--tp-rotation", help="TPLA latent rotation: none | hadamard (kv_lora_rank a power of two) | pca "
    "(default: the config's, hadamard).")]
TPCalibOpt = Annotated[str, typer.Option(
    "--tp-calib", help="TPLA pca: a calibration file (scripts/transmla_calib.py); default: the "
    "conversion's own calibration text.")]
BackboneOpt = Annotated[str, typer.Option(
    "--backbone", help="An inference-time backbone over the reader's weights, with its budgets "
    "(reader.backbone), e.g. spatten:tokens=0.6,heads=0.8,key_bits=4 (engine hf; methods rag, "
    "closed-book, rag-ft, closed-book-ft). Default: the config's (none).")]
HFAdapterOpt = Annotated[str, typer.Option(
    "--hf-adapter", help="Engine hf: merged (the adapter folded into the weights) | unmerged (the "
    "weights as loaded, adapted layers through the fused LoRA op); default: the config's.")]


def _tpla(tp_shards: int, tp_rotation: str, tp_calib: str) -> dict:
    """The ReaderConfig fields the --tp-* options set (those given)."""
    given = {"tp_shards": tp_shards, "tp_rotation": tp_rotation, "tp_calib": tp_calib}
    return {k: v for k, v in given.items() if v}


def _reader_dir(reader: Path | None) -> dict[str, str]:
    """The ReaderConfig fields --reader sets: checkpoint for a REAR checkpoint, model otherwise."""
    if reader is None:
        return {}
    if not reader.is_dir():
        raise FileNotFoundError(f"--reader {reader}: no such directory")
    return {"checkpoint" if (reader / "rear_config.json").is_file() else "model": str(reader)}


def _user_errors() -> tuple[type[BaseException], ...]:
    from rearqa.assets import AssetError
    from rearqa.config_errors import ConfigError
    from rearqa.eval.runner import ResumeError
    from rearqa.reader import QuestionError
    from rearqa.retriever import RetrieverError

    return (AssetError, ConfigError, QuestionError, ResumeError, RetrieverError, FileNotFoundError)


def _pipeline(config: Path | None, home: Path | None, collection: str | None = None,
              **reader: str):
    """The pipeline of `config`; `reader` overrides ReaderConfig fields given non-empty."""
    import dataclasses

    from rearqa.config import PipelineConfig
    from rearqa.pipeline import Pipeline

    cfg = PipelineConfig.from_yaml(config) if config else PipelineConfig()
    if collection:
        cfg.retriever = dataclasses.replace(cfg.retriever, collection=collection)
    if any(reader.values()):
        cfg.reader = dataclasses.replace(cfg.reader, **{k: v for k, v in reader.items() if v})
    return Pipeline(cfg, home=home)


# -- data ---------------------------------------------------------------------------------------
@data_app.command("prepare")
def data_prepare(home: HomeOpt = None,
                 force: Annotated[bool, typer.Option(help="Redo every step.")] = False) -> None:
    """Convert the reader model, extract the QA sets and build the corpus (idempotent, resumable)."""
    from rearqa import assets

    manifest = assets.prepare(home, force=force, progress=True)
    typer.echo(f"prepared {len(manifest.get('steps', {}))} steps in {assets.home() if home is None else home}")


# -- index --------------------------------------------------------------------------------------
@index_app.command("add")
def index_add(paths: Annotated[list[Path], typer.Argument(help="Files or folders: .jsonl .txt .md .html .pdf")],
              tag: Annotated[Optional[list[str]], typer.Option("--tag", help="Tag stored with every chunk.")] = None,
              config: ConfigOpt = None, home: HomeOpt = None, collection: CollectionOpt = None) -> None:
    """Ingest files and folders into a collection (upsert by source path)."""
    pipe = _pipeline(config, home, collection)
    result = pipe.collection.add_paths(paths, tags=tag or None, progress=True)
    typer.echo(result.summary() if hasattr(result, "summary") else str(result))
    for error in getattr(result, "errors", []):
        typer.echo(f"warning: {error}", err=True)


@index_app.command("delete")
def index_delete(ids: Annotated[Optional[list[str]], typer.Option("--id", help="Chunk id to delete.")] = None,
                 source: Annotated[Optional[str], typer.Option(help="Delete every chunk of this source path.")] = None,
                 config: ConfigOpt = None, home: HomeOpt = None, collection: CollectionOpt = None) -> None:
    """Delete chunks by id or by source document."""
    if not ids and not source:
        raise typer.BadParameter("give --id ID (repeatable) or --source PATH")
    pipe = _pipeline(config, home, collection)
    typer.echo(f"deleted {pipe.collection.delete(ids=ids or None, source=source)} chunks")


@index_app.command("stats")
def index_stats(config: ConfigOpt = None, home: HomeOpt = None, collection: CollectionOpt = None) -> None:
    """Show documents, chunks, index type and size of a collection."""
    pipe = _pipeline(config, home, collection)
    typer.echo(json.dumps(pipe.collection.stats(), indent=2, default=str))


@index_app.command("rebuild")
def index_rebuild(config: ConfigOpt = None, home: HomeOpt = None, collection: CollectionOpt = None) -> None:
    """Rebuild the vector index from the docstore (after corruption or a settings change)."""
    pipe = _pipeline(config, home, collection)
    pipe.collection.rebuild()
    typer.echo(json.dumps(pipe.collection.stats(), indent=2, default=str))


# -- ask ----------------------------------------------------------------------------------------
@app.command()
def ask(question: Annotated[str, typer.Argument(help="The question.")],
        k: Annotated[Optional[int], typer.Option(help="Passages to retrieve.")] = None,
        retriever: Annotated[Optional[str], typer.Option(help="dense | bm25 | hybrid")] = None,
        method: Annotated[Optional[str], typer.Option(help="rag | closed-book | rear | rag-ft | closed-book-ft")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the Answer as JSON.")] = False,
        reader: ReaderOpt = None, tp_shards: TPShardsOpt = 0, tp_rotation: TPRotationOpt = "",
        tp_calib: TPCalibOpt = "", backbone: BackboneOpt = "", hf_adapter: HFAdapterOpt = "",
        config: ConfigOpt = None, home: HomeOpt = None, collection: CollectionOpt = None) -> None:
    """Answer one question: the answer on the first line, then the citations."""
    pipe = _pipeline(config, home, collection, **_reader_dir(reader),
                     **_tpla(tp_shards, tp_rotation, tp_calib), backbone=backbone, hf_adapter=hf_adapter)
    answer = pipe.ask(question, k=k, method=method, retriever=retriever)
    if as_json:
        typer.echo(json.dumps(answer.to_dict(), indent=2))
        return
    typer.echo(answer.text or "(no answer)")
    for i, citation in enumerate(answer.citations, start=1):
        p = citation.passage
        snippet = " ".join(p.text.split()[:25])
        judged = ""  # REAR's reading of the passage: its judgment and calibrated probability
        if citation.judgment is not None:
            judged = f", read as {citation.judgment}"
            if citation.probability is not None:
                judged += f" ({citation.probability:.0%} likely to hold the answer)"
        typer.echo(f"[{i}] {p.title or p.id}  (score {p.score:.3f}, id {p.id}{judged})\n    {snippet} ...")
    if answer.from_own_knowledge:
        typer.echo("(answered from the model's own knowledge: no passages used)")


# -- eval ---------------------------------------------------------------------------------------
@app.command("eval")
def eval_cmd(dataset: Annotated[str, typer.Option(help="nq-test | nq-dev-select | tqa-test | tqa-dev-select | squad-test | FILE.jsonl")],
             out: Annotated[Path, typer.Option(help="Output directory (report.json, report.md, plot).")],
             subset: Annotated[str, typer.Option(help="all | answerable")] = "all",
             method: Annotated[str, typer.Option(help="rag | closed-book | rear | rag-ft | closed-book-ft (the last three need reader.checkpoint / reader.adapter)")] = "rag",
             retriever: Annotated[str, typer.Option(help="dense | bm25 | hybrid")] = "dense",
             k: Annotated[int, typer.Option(help="Passages given to the reader.")] = 5,
             limit: Annotated[Optional[int], typer.Option(help="First N questions only.")] = None,
             batch_size: Annotated[Optional[int], typer.Option(help="Questions per batch.")] = None,
             seed: Annotated[int, typer.Option(help="Seed recorded in the report.")] = 0,
             passage_order: Annotated[str, typer.Option(help="retrieval | reversed | shuffled:SEED: the order the reader sees its k passages in.")] = "retrieval",
             overwrite: Annotated[bool, typer.Option(help="Start over instead of resuming --out.")] = False,
             routing: Annotated[str, typer.Option(help="rear: path_reliability | knowledge_consistency (default: the checkpoint's).")] = "",
             fallback: Annotated[str, typer.Option(help="rear, when no passage is relevant: closed_book | abstain (default: the checkpoint's).")] = "",
             reader: ReaderOpt = None, tp_shards: TPShardsOpt = 0, tp_rotation: TPRotationOpt = "",
             tp_calib: TPCalibOpt = "", backbone: BackboneOpt = "", hf_adapter: HFAdapterOpt = "",
             config: ConfigOpt = None, home: HomeOpt = None) -> None:
    """Batch evaluation with EM / F1 / answer-contained and answer-recall@k (resumable)."""
    from rearqa.eval.runner import EvalSettings, run_eval

    pipe = _pipeline(config, home, routing=routing, fallback=fallback, **_reader_dir(reader),
                     **_tpla(tp_shards, tp_rotation, tp_calib), backbone=backbone, hf_adapter=hf_adapter)
    settings = EvalSettings(dataset=dataset, subset=subset, method=method, retriever=retriever,
                            k=k, limit=limit, batch_size=batch_size or pipe.config.reader.batch_size,
                            out_dir=out, seed=seed, passage_order=passage_order)
    run_eval(pipe, settings, progress=True, overwrite=overwrite, home=pipe.home)  # writes report.md
    typer.echo((out / "report.md").read_text())


@app.command("compare")
def compare_cmd(reports: Annotated[list[Path], typer.Argument(help="report.json files; the first is the baseline.")],
                out: Annotated[Path, typer.Option(help="Output directory for comparison.json/.md.")],
                resamples: Annotated[int, typer.Option(help="Bootstrap resamples.")] = 10000,
                seed: int = 0) -> None:
    """Paired comparison of eval reports on their shared questions, with 95% bootstrap CIs."""
    from rearqa.eval.compare import compare_reports, write_comparison

    result = compare_reports(reports, n_resamples=resamples, seed=seed)
    write_comparison(result, out)
    typer.echo((out / "comparison.md").read_text())


# -- ui -----------------------------------------------------------------------------------------
@app.command()
def ui(host: Annotated[str, typer.Option(help="Interface to bind (loopback by default).")] = "127.0.0.1",
       port: Annotated[int, typer.Option(help="Port.")] = 7860,
       reader: ReaderOpt = None, hf_adapter: HFAdapterOpt = "",
       config: ConfigOpt = None, home: HomeOpt = None, collection: CollectionOpt = None) -> None:
    """Start the Gradio chat over the collection."""
    from rearqa.app.ui import launch

    pipe = _pipeline(config, home, collection, **_reader_dir(reader), hf_adapter=hf_adapter)
    launch(pipe, host=host, port=port)


# -- serve --------------------------------------------------------------------------------------
@app.command()
def serve(host: Annotated[str, typer.Option(help="Interface to bind (loopback by default).")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="Port.")] = 8000,
          token: Annotated[Optional[str], typer.Option(
              envvar="REARQA_API_TOKEN", show_default=False,
              help="Bearer token required on every route but /health and the docs (default: none).")] = None,
          max_queue: Annotated[int, typer.Option(help="Requests that may wait for the reader; more get 429.")] = 8,
          max_batch: Annotated[int, typer.Option(
              help="Questions read in one batch (1: one at a time; 0: the engine's measured default, "
                   "docs/reliability.md).")] = 0,
          max_upload_mb: Annotated[float, typer.Option(help="Largest document upload, in MiB.")] = 20.0,
          job_threshold_kb: Annotated[float, typer.Option(
              help="Uploads larger than this (KiB) answer 202 and are added as a background job; 0: all.")] = 64.0,
          job_batch_chunks: Annotated[int, typer.Option(
              help="Chunks per committed batch of an ingestion job.")] = 256,
          chat: Annotated[Optional[bool], typer.Option(
              "--chat/--no-chat", show_default=False,
              help="Mount the web chat at /chat (default: on unless --token is set).")] = None,
          engine: Annotated[str, typer.Option(help="Reader engine: hf | vllm (default: the config's).")] = "",
          method: Annotated[str, typer.Option(
              help="Default reader method: rag | closed-book | rear | rag-ft | closed-book-ft "
                   "(default: the config's; a request may ask for another).")] = "",
          adapter: Annotated[str, typer.Option(
              help="rag-ft / closed-book-ft adapter dir (default: the config's, else the shipped "
                   "one); merged on engine hf, served as a LoRA on vllm (docs/adapters.md).")] = "",
          hf_adapter: HFAdapterOpt = "",
          reader: ReaderOpt = None, tp_shards: TPShardsOpt = 0, tp_rotation: TPRotationOpt = "",
          tp_calib: TPCalibOpt = "", backbone: BackboneOpt = "",
          config: ConfigOpt = None, home: HomeOpt = None, collection: CollectionOpt = None) -> None:
    """Start the HTTP API (FastAPI; docs at /docs, OpenAI-compatible chat at /v1) and the web chat."""
    from rearqa.app.jobs import JobSettings
    from rearqa.app.server import serve as run_server

    pipe = _pipeline(config, home, collection, engine=engine, method=method, adapter=adapter,
                     hf_adapter=hf_adapter, **_reader_dir(reader),
                     **_tpla(tp_shards, tp_rotation, tp_calib), backbone=backbone)
    from rearqa.app.state import DEFAULT_MAX_BATCH

    max_batch = max_batch or DEFAULT_MAX_BATCH[pipe.config.reader.engine]
    run_server(pipe, host=host, port=port, token=token or None, max_queue=max_queue, max_batch=max_batch,
               max_upload_bytes=int(max_upload_mb * 1024 * 1024),
               jobs=JobSettings(threshold_bytes=int(job_threshold_kb * 1024), batch_chunks=job_batch_chunks),
               chat=(not token) if chat is None else chat)


# -- convert ------------------------------------------------------------------------------------
@app.command()
def convert(out: Annotated[Path, typer.Option(help="New directory for the converted reader.")],
            transform: Annotated[Optional[str], typer.Option(help="Backbone transform (reader/backbone: transmla | xecomla | kv_merge | loraprune | masa).")] = None,
            source: Annotated[Optional[str], typer.Option("--from", help="base | a transformers checkpoint | a PEFT adapter (merged first) | a REAR checkpoint (its LoRA merged; rows and head kept).")] = None,
            recipe: Annotated[Optional[Path], typer.Option(help="A healed reader's recipe.json (or its directory, e.g. checkpoints/healed/NAME): rebuild its conversion and merge its heal adapter; takes no other conversion option.")] = None,
            heal: Annotated[bool, typer.Option("--heal/--no-heal", help="With --recipe: merge the heal adapter (--no-heal: the unhealed conversion, the control).")] = True,
            kv_lora_rank: Annotated[Optional[int], typer.Option(help="transmla, xecomla: cached latent width per token and layer (xecomla: unset picks each layer's by --energy).")] = None,
            rope_dim: Annotated[Optional[int], typer.Option(help="transmla, xecomla: rotary key width (divides the head width).")] = None,
            energy: Annotated[Optional[float], typer.Option(help="xecomla: per-layer rank keeping this share of the singular-value energy (default 0.99).")] = None,
            freqfold: Annotated[Optional[int], typer.Option(help="transmla: frequencies pooled per RoRoPE rotation (default: the smallest valid).")] = None,
            kv_heads: Annotated[Optional[int], typer.Option(help="kv_merge: KV heads kept (a divisor of the model's; SmolLM2: 1 or 3).")] = None,
            atoms: Annotated[Optional[int], typer.Option(help="masa: atoms per projection type, shared by the layers (1 to the layer count; the count rebuilds exactly).")] = None,
            projections: Annotated[Optional[str], typer.Option(help="masa: the projections that share atoms, comma-separated (default q_proj,k_proj,v_proj,o_proj; gate_proj,up_proj,down_proj too on request).")] = None,
            calib_passages: Annotated[Optional[int], typer.Option(help="Calibration samples drawn from the corpus.")] = None,
            latent_norm: Annotated[Optional[bool], typer.Option("--latent-norm/--no-latent-norm", show_default=False, help="transmla, xecomla: RMSNorm on the latent (what vLLM's DeepSeek model runs; not exact).")] = None,
            pad_v_to: Annotated[Optional[int], typer.Option(help="transmla: zero-pad value heads to this width (a vLLM CUDA prefill shape; exact).")] = None,
            seed: Annotated[Optional[int], typer.Option(help="Seed of the calibration sample.")] = None,
            mask: Annotated[Optional[Path], typer.Option(help="loraprune: the mask JSON its fine-tuning chose (KV groups and MLP channels kept per layer).")] = None,
            dtype: Annotated[Optional[str], typer.Option(help="Dtype the converted weights are saved in: bfloat16 (what the reader runs in; the default) | float32 (for parity checks).")] = None,
            calib_file: Annotated[Optional[Path], typer.Option(help="Calibration token ids from scripts/transmla_calib.py instead of the corpus (a machine without it).")] = None,
            home: HomeOpt = None) -> None:
    """Convert a reader's backbone (TransMLA, X-EcoMLA: GQA to multi-head latent attention) to a
    new reader directory that loads by path (--reader DIR); or rebuild a shipped healed reader
    from its recipe (--recipe checkpoints/healed/NAME)."""
    from rearqa.config_errors import ConfigError

    options = {"kv_lora_rank": kv_lora_rank, "rope_dim": rope_dim, "energy": energy, "freqfold": freqfold,
               "kv_heads": kv_heads, "calib_passages": calib_passages, "latent_norm": latent_norm,
               "pad_v_to": pad_v_to, "seed": seed, "mask": str(mask) if mask else None,
               "atoms": atoms, "projections": projections}
    if recipe is not None:
        given = {"--transform": transform, "--from": source, "--dtype": dtype, "--calib-file": calib_file,
                 **{"--" + k.replace("_", "-"): v for k, v in options.items()}}
        extra = [flag for flag, value in given.items() if value is not None]
        if extra:
            raise ConfigError(f"--recipe says how to convert; drop {', '.join(extra)}")
        from rearqa.app.recipe_cmd import convert_recipe

        out_dir = convert_recipe(recipe, out, heal=heal, home=home, progress=True, say=typer.echo)
    else:
        if transform is None or source is None or not heal:
            raise ConfigError("give --transform and --from (and no --no-heal), or --recipe")
        from rearqa.app.convert_cmd import convert_reader

        out_dir = convert_reader(transform, source, out, options, home=home, progress=True,
                                 dtype=dtype or "bfloat16", calib_file=calib_file)
    from rearqa.reader.backbone import read_manifest

    manifest = read_manifest(out_dir)
    typer.echo(f"wrote {out_dir}: {manifest.label}, {manifest.kv_bytes_per_token} KV bytes per token "
               f"({manifest.dtype}), format {manifest.export_format}")


def main() -> None:
    try:
        app()
    except _user_errors() as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
