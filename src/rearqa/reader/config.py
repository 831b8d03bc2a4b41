"""Settings of the reader: which engine, which model, how answers are generated."""
from __future__ import annotations

from dataclasses import dataclass

READER_METHODS = ("closed-book", "rag")
DTYPES = ("float32", "bfloat16")


@dataclass
class ReaderConfig:
    """How the reader LLM is loaded and how it answers."""

    engine: str = "hf"  # reader engine name (see rearqa.reader.engines.ENGINES)
    model: str = ""  # path to a transformers checkpoint; "" = the bundled SmolLM2-135M-Instruct
    method: str = "rag"  # closed-book (no passages) | rag (top-k passages in the chat template)
    prompt: str = "short"  # prompt template name (see rearqa.reader.prompts.PROMPTS)
    max_new_tokens: int = 32  # cap on generated answer tokens
    batch_size: int = 8  # questions per generate() call in batch use
    dtype: str = "bfloat16"  # bfloat16 (2-4x faster on CPU) | float32 (the reference, for parity)
    threads: int = 0  # torch CPU threads; 0 keeps torch's default
    max_passage_words: int = 150  # each passage is cut to this many words in the prompt
    max_question_chars: int = 2000  # longer questions are refused with a clear error
    trust_remote_code: bool = False  # never needed for the bundled model; off for safety

    def __post_init__(self) -> None:
        from rearqa.config_errors import ConfigError

        if self.method not in READER_METHODS:
            raise ConfigError(f"reader.method={self.method!r}: choose one of {list(READER_METHODS)}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"reader.dtype={self.dtype!r}: choose one of {list(DTYPES)}")
        for name in ("max_new_tokens", "batch_size", "max_passage_words", "max_question_chars"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"reader.{name}={value!r}: must be a positive integer")
        if not isinstance(self.threads, int) or self.threads < 0:
            raise ConfigError(f"reader.threads={self.threads!r}: must be 0 (default) or a positive integer")
