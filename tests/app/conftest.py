"""Fixtures of the app tests."""
import threading

import pytest


class BatchGate:
    """A write lock for the job runner that lets it in `entries` times, then makes it wait
    until `release_all()`: the job stops between two batches, where the test can look."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self.lock = threading.Lock()
        self.waiting = threading.Event()  # the job is stopped at the gate
        self.opened = threading.Event()

    def __enter__(self) -> None:
        if self.entries == 0:
            self.waiting.set()
            self.opened.wait()
        self.entries -= 1
        self.lock.acquire()

    def __exit__(self, *exc) -> None:
        self.lock.release()

    def release_all(self) -> None:
        self.opened.set()


@pytest.fixture
def batch_gate():
    """`batch_gate(entries)`: a BatchGate to put in place of an IngestJobs' write lock."""
    return BatchGate
