"""rearqa.kernels and every op import and run their references with triton absent (the CPU
environment uninstalls it): checked in a fresh interpreter where `import triton` fails."""
from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
sys.modules["triton"] = None  # any `import triton` now raises ImportError
import torch
from rearqa.kernels import KERNELS, get_kernel
assert set(KERNELS) == {"mla_decode", "lora_linear", "topk"}, KERNELS
ops = {name: get_kernel(name) for name in KERNELS}
q, c = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
ops["mla_decode"](q, q[..., :4], c, c[..., :4], torch.tensor([5, 2]), scale=0.3)
x, w = torch.randn(4, 8), torch.randn(6, 8)
ops["lora_linear"](x, w, torch.randn(2, 8), torch.randn(6, 2), scaling=2.0)
ops["topk"](x, 3)
assert "triton" not in {m.split(".")[0] for m in sys.modules if sys.modules[m] is not None}
print("ok")
"""


def test_kernels_import_and_run_without_triton():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
