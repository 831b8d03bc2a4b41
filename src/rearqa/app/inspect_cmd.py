"""`rearqa inspect`: looking inside a reader's weights.

    rearqa inspect heads --out docs/results/heads                 the shipped rag-ft reader (merged)
    rearqa inspect heads --reader base --rank 8 --out runs/heads  the bundled SmolLM2
    rearqa inspect heads --reader readers/pruned --out runs/heads-pruned

`heads` scores how strongly each attention head's output is read by the queries, keys and values
of later heads (rearqa.eval.heads: Merullo et al.'s Talking Heads, Elhage et al.'s composition
scores) and writes scores.json and heatmap.png to --out.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rearqa.config_errors import ConfigError

inspect_app = typer.Typer(help="Look inside a reader's weights.", no_args_is_help=True)


def reader_source(reader: str | None) -> str | Path:
    """What --reader names, as rearqa convert's --from takes it: the shipped rag-ft adapter when
    not given (the reader `--method rag-ft` answers with), else "base" or a directory."""
    if reader is None:
        from rearqa.reader.config import default_adapter_dir

        return default_adapter_dir("rag-ft")
    return reader


def load_reader(source: str | Path, home: Path):
    """(the causal LM in float32, a record of the source): a transformers checkpoint loads by
    path (no tokenizer needed); base, an adapter or a REAR checkpoint as `rearqa convert --from`
    loads them (the LoRA merged)."""
    import torch

    from rearqa.app.convert_cmd import load_source
    from rearqa.reader.backbone.loading import load_causal_lm, source_kind

    if source_kind(source, "--reader") == "model":
        return load_causal_lm(source, torch.float32).eval(), {"kind": "model", "path": str(source)}
    lm, _, _, record = load_source(source, home)
    return lm, record


def relative(value: str) -> str:
    """A path under the working directory as a relative one (what a committed scores.json says)."""
    path = Path(value)
    return str(path.relative_to(Path.cwd())) if path.is_absolute() and path.is_relative_to(Path.cwd()) else value


def check_out_dir(out: Path) -> Path:
    """--out must be a directory (it may exist; scores.json and heatmap.png are replaced)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a directory for scores.json and heatmap.png")
    return out


def inspect_heads(reader: str | None, out: Path, rank: int = 16, top: int = 50,
                  home: Path | None = None) -> dict[str, Path]:
    """Composition scores of the reader's heads, written to `out`; returns the files written."""
    from rearqa import assets
    from rearqa.eval.heads import composition
    from rearqa.eval.heads_report import write_outputs

    check_out_dir(out)
    if rank < 1:
        raise ConfigError(f"--rank {rank}: choose a positive number of singular vectors (e.g. 16)")
    lm, record = load_reader(reader_source(reader), assets.home_or_default(home))
    record = {k: relative(v) for k, v in record.items()}
    config = lm.config
    comp = composition(lm, rank)  # refuses a reader that is not Llama-style, a rank > head_dim
    shape = {"layers": config.num_hidden_layers, "heads": config.num_attention_heads,
             "kv_heads": config.num_key_value_heads, "hidden": config.hidden_size,
             "head_dim": getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads}
    return write_outputs(comp, record, shape, out, top)


@inspect_app.command("heads")
def heads_cmd(out: Annotated[Path, typer.Option(help="Directory for scores.json and heatmap.png.")],
              reader: Annotated[Optional[str], typer.Option(
                  help="base | a transformers checkpoint | a PEFT adapter (merged) | a REAR checkpoint "
                       "(default: the shipped rag-ft reader, checkpoints/rag-ft-smollm2, merged).")] = None,
              rank: Annotated[int, typer.Option(help="Singular vectors per side in the subspace score (1..head_dim).")] = 16,
              top: Annotated[int, typer.Option(help="Strongest head pairs listed per kind.")] = 50,
              home: Annotated[Optional[Path], typer.Option(help="Data directory holding the bundled reader.")] = None) -> None:
    """Head composition (Talking Heads, arXiv 2406.09519): how strongly each head's output is
    read by the queries (Q), keys (K) and values (V) of later heads, from the weights alone."""
    paths = inspect_heads(reader, out, rank, top, home)
    typer.echo(f"wrote {paths['json']} and {paths['png']}")
