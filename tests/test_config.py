from pathlib import Path

import pytest

from rearqa.config import ConfigError, PipelineConfig, from_dict
from rearqa.reader.config import ReaderConfig

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_parses(path):
    config = PipelineConfig.from_yaml(path)
    assert config.k >= 1
    assert config.reader.method in ("closed-book", "rag")


def test_defaults_match_the_shipped_default_config():
    shipped = PipelineConfig.from_yaml(Path(__file__).parents[1] / "configs" / "default.yaml")
    assert shipped.to_dict() == PipelineConfig().to_dict()


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['colour'\].*valid settings"):
        from_dict(PipelineConfig, {"colour": "red"})


def test_nested_unknown_key_names_its_section():
    with pytest.raises(ConfigError, match=r"reader: unknown setting\(s\) \['temprature'\]"):
        from_dict(PipelineConfig, {"reader": {"temprature": 0.1}})


def test_bad_values_are_refused_with_the_value():
    with pytest.raises(ConfigError, match="k=0"):
        PipelineConfig(k=0)
    with pytest.raises(ConfigError, match="reader.method='sing'"):
        ReaderConfig(method="sing")
    with pytest.raises(ConfigError, match="reader.dtype"):
        ReaderConfig(dtype="float8")


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("k: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        PipelineConfig.from_yaml(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        PipelineConfig.from_yaml(tmp_path / "missing.yaml")


# The distill and loraprune configs change a backbone and are no reader's training run:
# tests/training/test_distill.py and test_loraprune_task.py parse them.
TRAIN_CONFIGS = sorted(p for p in (Path(__file__).parents[1] / "configs" / "train").glob("*.yaml")
                       if not p.name.startswith(("distill", "loraprune")))


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=[p.name for p in TRAIN_CONFIGS])
@pytest.mark.parametrize("method", ["rear", "rag-ft", "closed-book-ft"])
def test_every_training_config_parses(path, method):
    from rearqa.training.config import TrainConfig

    config = TrainConfig.from_yaml(path, method=method)
    assert all(split.endswith("-dev-train") for split in config.splits)


def test_the_frozen_spatten_budget_parses_to_the_chosen_settings():
    from rearqa.reader.backbone.spatten.config import parse_budgets

    config = PipelineConfig.from_yaml(Path(__file__).parents[1] / "configs" / "backbone" / "spatten-ragft.yaml")
    assert (config.k, config.reader.method) == (3, "rag-ft")
    budgets = parse_budgets(config.reader.backbone)
    assert (budgets.tokens, budgets.start_layer, budgets.heads, budgets.key_bits) == (0.6, 8, 1.0, 0)
    assert (budgets.prefill, budgets.window) == (0, 32)  # session 17's choice on all of dev-select


def test_rears_frozen_spatten_budget_parses_to_its_chosen_settings():
    from rearqa.reader.backbone.spatten.config import parse_budgets

    config = PipelineConfig.from_yaml(Path(__file__).parents[1] / "configs" / "backbone" / "spatten-rear.yaml")
    assert (config.k, config.reader.method) == (3, "rear")
    budgets = parse_budgets(config.reader.backbone)
    assert (budgets.tokens, budgets.start_layer, budgets.heads, budgets.key_bits) == (0.6, 16, 1.0, 0)
