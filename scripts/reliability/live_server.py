"""A real `rearqa serve` process for the reliability scripts: a scratch data home that shares the
prepared models, a YAML config (collection, short answers), a free loopback port, start, wait for
/health, kill -9, restart. Used by load.py, crash.py and security.py; not a test fixture.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
MINI_CORPUS = REPO / "tests" / "data" / "mini_corpus.jsonl"
PREPARED = ("models", "data", "downloads", "manifest.json")


def scratch_home(into: Path) -> Path:
    """`into` as a data home whose models and corpus are links to the prepared ones."""
    from rearqa import assets

    prepared = assets.ensure_prepared(progress=False)
    into.mkdir(parents=True, exist_ok=True)
    for name in PREPARED:
        if (prepared / name).exists() and not (into / name).exists():
            (into / name).symlink_to(prepared / name)
    return into


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    """One `rearqa serve` subprocess over `home` (restartable on the same port and data)."""

    home: Path
    collection: str = "reliability"
    max_new_tokens: int = 8
    k: int = 2
    token: str | None = None
    max_queue: int = 8
    engine: str = ""  # reader.engine (hf | vllm); "" = the config's default
    kv_block_size: int = 0  # reader.kv_block_size (vllm); 0 = vLLM's default
    threads: int = 0  # reader.threads (vLLM: cores its model worker binds; hf: torch threads); 0 = default
    max_batch: int | None = None  # rearqa serve --max-batch (1: one at a time); None: not passed
    src: Path = REPO / "src"  # the rearqa sources the server runs (another checkout's, for a baseline)
    log_path: Path | None = None
    serve_args: tuple[str, ...] = ()  # more `rearqa serve` options, e.g. ("--job-threshold-kb", "0")
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _config(self) -> Path:
        path = self.home / "reliability.yaml"
        engine = f"  engine: {self.engine}\n" if self.engine else ""
        engine += f"  kv_block_size: {self.kv_block_size}\n" if self.kv_block_size else ""
        engine += f"  threads: {self.threads}\n" if self.threads else ""
        path.write_text(f"k: {self.k}\nretriever:\n  collection: {self.collection}\n"
                        f"reader:\n  max_new_tokens: {self.max_new_tokens}\n{engine}")
        return path

    def start(self, timeout_s: float = 300) -> float:
        """Start the server and wait until /health says ready; returns the seconds that took."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(self.src), os.environ.get("PYTHONPATH", "")]),
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "REARQA_API_TOKEN": self.token or ""}
        cmd = [sys.executable, "-m", "rearqa.app.cli", "serve", "--port", str(self.port), "--home", str(self.home),
               "--config", str(self._config()), "--max-queue", str(self.max_queue), *self.serve_args]
        if self.max_batch is not None:
            cmd += ["--max-batch", str(self.max_batch)]
        log = open(self.log_path or os.devnull, "ab")
        started = time.monotonic()
        self.process = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        log.close()
        while time.monotonic() - started < timeout_s:
            if self.process.poll() is not None:
                raise RuntimeError(f"rearqa serve exited with {self.process.returncode} at start; "
                                   f"see {self.log_path}")
            try:
                if httpx.get(f"{self.url}/health", timeout=5).json().get("status") == "ready":
                    return time.monotonic() - started
            except (httpx.TransportError, ValueError):
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"rearqa serve not ready after {timeout_s} s; see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler, no flush, as in a crash or an OOM kill."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def upload(self, client: httpx.Client, name: str, data: bytes) -> httpx.Response:
        return client.post(f"{self.url}/documents", headers=self.headers, files={"file": (name, data)})

    def __enter__(self) -> "LiveServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
