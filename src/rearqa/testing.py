"""Test helpers for every wing (reader, backbone transforms, adapters, kernels).

- tiny tokenizers and Llama models (STYLE rule 6: tiny configs). Nothing here touches the network
  or the real checkpoint: the tokenizer is a word-level `tokenizers` model over a few dozen words
  with a chat template, the model a 2-layer Llama;
- the package's import graph read from its source with ast, for the layer checks
  (tests/test_layers.py) and the per-package shape tests.
"""
from __future__ import annotations

import ast
from pathlib import Path

WORDS = ("the a of in is was who what where when which wrote written by play tragedy hamlet "
         "shakespeare paris capital france city river london england born year music band "
         "answer question passage relevant irrelevant score user assistant system yes no").split()
SPECIALS = ["<unk>", "<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|>"
                 "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant {% endif %}")


def tiny_tokenizer(bos: bool = True):
    """A word-level tokenizer (vocab = 6 specials + the words above + '.' '?' ','), bos optional."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + list(WORDS) + [".", "?", ","])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if bos:
        backend.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>",
                                        pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_llama(vocab_size: int, tied: bool = True, hidden_size: int = 16, seed: int = 0, layers: int = 2):
    """A Llama of `layers` layers (2 query heads, 1 KV head) with random weights."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size,
                         intermediate_size=2 * hidden_size, num_hidden_layers=layers,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                         tie_word_embeddings=tied, pad_token_id=1, bos_token_id=2, eos_token_id=3)
    return randomize_matrices(LlamaForCausalLM(config).eval())


def tiny_deepseek(rank: int = 24, rope: int = 8, nope: int = 16, v: int = 16, heads: int = 3,
                  norm: bool = True, impl: str = "sdpa", seed: int = 0):
    """A random 2-layer dense DeepseekV3ForCausalLM (MLA with latent `rank`, weights std 0.3: logits
    well above noise); without `norm` the latent RMSNorm is the identity our converted readers
    may have (`config.latent_norm` False)."""
    import torch
    from torch import nn
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    torch.manual_seed(seed)
    config = DeepseekV3Config(
        vocab_size=50, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
        num_attention_heads=heads, num_key_value_heads=heads, first_k_dense_replace=2,
        q_lora_rank=None, kv_lora_rank=rank, qk_nope_head_dim=nope, qk_rope_head_dim=rope,
        v_head_dim=v, rope_interleave=True, tie_word_embeddings=False, max_position_embeddings=64,
        pad_token_id=0, bos_token_id=1, eos_token_id=2)
    config.latent_norm = norm
    config._attn_implementation = impl
    model = randomize_matrices(DeepseekV3ForCausalLM(config).eval())
    if not norm:
        for layer in model.model.layers:
            layer.self_attn.kv_a_layernorm = nn.Identity()
    return model


def randomize_matrices(model, std: float = 0.3):
    """`model` with every weight matrix drawn at `std`: larger than the 0.02 default, so logit
    differences are well above fp noise (norm weights keep their ones)."""
    import torch

    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(std=std)
    return model


def moved_off_init(model, seed: int = 7, scale: float = 0.1):
    """`model` (a wrapped adapter model) with every adapter tensor (a "lora_" name) moved off its
    init by seeded noise: merge and export tests need non-identity adapters (B = 0 would pass
    them trivially)."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.add_(torch.randn_like(param) * scale)
    return model


FRESH_RELOAD = """
import sys, torch
from transformers import AutoModelForCausalLM
from rearqa.reader.adapters import load_adapter
base, adapter, ids, out = sys.argv[1:5]
model = load_adapter(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter).eval()
{check}
with torch.no_grad():
    torch.save(model(torch.load(ids, weights_only=True)).logits, out)
"""


def logits_in_a_fresh_process(base_dir, adapter_dir, ids, workdir, check: str = ""):
    """(logits, stderr) of the base checkpoint with the saved adapter loaded by `load_adapter` in a
    new Python process, which has none of this one's PEFT registrations: what a saved adapter
    must survive. `check`: statements run there on `model` before the forward."""
    import os
    import subprocess
    import sys

    import torch

    workdir = Path(workdir)
    torch.save(ids, workdir / "ids.pt")
    run = subprocess.run([sys.executable, "-c", FRESH_RELOAD.format(check=check), str(base_dir),
                          str(adapter_dir), str(workdir / "ids.pt"), str(workdir / "out.pt")],
                         env={**os.environ, "PYTHONPATH": str(SRC_DIR), "OMP_NUM_THREADS": "1"},
                         capture_output=True, text=True, timeout=300)
    if run.returncode:
        raise AssertionError(f"the fresh process failed:\n{run.stderr[-3000:]}")
    return torch.load(workdir / "out.pt", weights_only=True), run.stderr


# ------------------------------------------------------------------ the package's import graph

PACKAGE_DIR = Path(__file__).resolve().parent
SRC_DIR = PACKAGE_DIR.parent


def module_name(path: Path) -> str:
    """src/rearqa/reader/__init__.py -> rearqa.reader."""
    parts = path.relative_to(SRC_DIR).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(module: str, modules: dict[str, Path]) -> set[str]:
    """The rearqa modules `module` imports (a `from pkg import name` counts as pkg.name where that
    is a module, else as pkg)."""
    path = modules[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source
                       for a in node.names]
        else:
            continue
        found |= {t for t in targets if t == "rearqa" or t.startswith("rearqa.")}
    return {t for t in found if t != module}


def import_graph() -> dict[str, set[str]]:
    """module -> the rearqa modules it imports, for every module of the package; every import
    statement counts, those inside functions and `if TYPE_CHECKING:` blocks too."""
    modules = {module_name(p): p for p in PACKAGE_DIR.rglob("*.py")}
    return {m: imported_modules(m, modules) for m in modules}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found
