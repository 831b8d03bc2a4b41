"""Readers turn a question and its passages into an `Answer`.

The baseline reader does closed-book and standard RAG; the REAR reader (rank head, judgment
tokens, routing) plugs in beside it under the same `read_batch` / `stream` seam.
"""
from rearqa.reader.baseline import BaselineReader, QuestionError, check_question
from rearqa.reader.config import ReaderConfig

__all__ = ["BaselineReader", "QuestionError", "ReaderConfig", "check_question"]
