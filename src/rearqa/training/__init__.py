"""REAR training: losses (LM + bi-granularity rank), and later data, loops and adapters."""
