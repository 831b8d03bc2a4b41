"""The errors of the retriever package.

Every error a user can cause (a mismatched or corrupt index, a bad filter, an unsupported
file) derives from `RetrieverError`, which the CLI turns into one `error:` line. Each message
names the file or value at fault and what to do about it.
"""
from __future__ import annotations


class RetrieverError(Exception):
    """Base class of the retriever's user-facing errors."""


class IndexMismatchError(RetrieverError):
    """A stored index or docstore was built with settings other than the configured ones."""


class CorruptIndexError(RetrieverError):
    """A stored index file (FAISS index or its JSON sidecar) cannot be read."""


class IndexBuildError(RetrieverError):
    """The vector index cannot be built as configured (e.g. too few vectors to train IVF)."""


class FilterError(RetrieverError, ValueError):
    """A metadata filter has a bad key or value."""


class UnsupportedFileError(RetrieverError, ValueError):
    """No loader is registered for a file's suffix."""


class QueryError(RetrieverError, ValueError):
    """A search call got a bad query or k."""
