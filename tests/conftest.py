"""Shared fixtures: the prepared data home with the real models and data sets.

`make test` runs `rearqa data prepare` first, so `prepared_home` is a quick check there; run
alone, the first test that needs it prepares the home (a few minutes, once per machine).
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


def pytest_runtest_logreport(report):
    """With REARQA_FAILURE_LOG set (scripts/gpu_kernels.sh sets it), each failure's test and
    traceback are appended to that file as it happens, so a run cut by its time limit (session 21's
    GPU tests, before pytest's summary) still says what failed. With REARQA_DURATION_LOG set, each
    test's outcome and duration are appended to that file as it ends (its call, or the setup that
    skipped or failed it), so a cut run also says which tests ended and which were slow (session 24's
    was cut about 12 tests short). Under xdist only the controller writes (a worker's reports reach
    it too)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    path = os.environ.get("REARQA_FAILURE_LOG")
    if path and report.failed:
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"FAILED {report.nodeid} ({report.when})\n{report.longreprtext[-4000:]}\n\n")
    path = os.environ.get("REARQA_DURATION_LOG")
    if path and (report.when == "call" or (report.when == "setup" and not report.passed)):
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"{report.outcome} {report.duration:.2f}s {report.nodeid} ({report.when})\n")


def _timed(path: str) -> dict[str, float]:
    """Each test's duration in a REARQA_DURATION_LOG ("outcome 1.23s nodeid (when)" lines)."""
    times = {}
    with open(path, encoding="utf-8") as log:
        for line in log:
            parts = line.split()
            if len(parts) >= 3 and parts[1].endswith("s"):
                try:
                    times[parts[2]] = max(times.get(parts[2], 0.0), float(parts[1][:-1]))
                except ValueError:
                    continue
    return times


def pytest_collection_modifyitems(config, items):
    """With REARQA_DURATIONS naming an earlier run's REARQA_DURATION_LOG (scripts/gpu_kernels.sh
    passes tests/kernels/gpu-durations.log), the tests run longest first: tests that log never
    timed, then the timed ones by falling duration (a stable sort). Under xdist the work is then
    handed out longest first, so no 90-s test starts last: session 28's run at 10 workers was cut
    at 170 s with two 86-s DeepSeek fp32 cases still running, which had started near the end of
    the collection order. Every worker sorts the same collection the same way, as xdist needs."""
    path = os.environ.get("REARQA_DURATIONS")
    if not path or not os.path.isfile(path):
        return
    times = _timed(path)
    items.sort(key=lambda item: -times.get(item.nodeid, float("inf")))


@pytest.fixture(scope="session")
def prepared_home():
    from rearqa import assets

    return assets.ensure_prepared(progress=False)


@pytest.fixture(scope="session")
def reader_dir(prepared_home):
    from rearqa import assets

    return assets.reader_model_dir(prepared_home)


@pytest.fixture(scope="module")
def scratch_home(prepared_home, tmp_path_factory):
    """A data home of its own (fresh indexes/) that shares the prepared models and data sets."""
    home = tmp_path_factory.mktemp("home")
    for name in ("models", "data", "downloads", "manifest.json"):
        if (prepared_home / name).exists():
            (home / name).symlink_to(prepared_home / name)
    return home


def _torch_threads(n: int):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core machine OpenMP threads
    spin against other processes (a 5x slowdown seen here)."""
    yield from _torch_threads(1)


@pytest.fixture
def both_cores():
    """The real model gains from both cores (a shipped healed reader's rebuild: 78 s against 104 s
    on one), whatever thread count an earlier fixture left torch at."""
    yield from _torch_threads(2)
