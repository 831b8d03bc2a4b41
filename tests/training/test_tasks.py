"""The method registry: every training method names a task class, and a reader serves its model."""
import pytest

from rearqa.config_errors import ConfigError
from rearqa.registry import resolve
from rearqa.training.config import BACKBONE_METHODS, BASELINES, METHODS, TASKS, TrainConfig


@pytest.mark.parametrize("method", METHODS)
def test_every_method_resolves_to_a_task(method):
    task = resolve(TASKS, method, "training method")
    assert isinstance(task, type)
    assert all(hasattr(task, a) for a in ("batch", "losses", "save_model"))


def test_methods_are_the_registry_keys_and_reader_methods():
    from rearqa.reader.config import READER_METHODS

    assert METHODS == tuple(TASKS) and set(BASELINES) < set(METHODS)
    # a trained model is read by the method's reader; a healed backbone (distill) by any reader
    assert set(METHODS) - set(BACKBONE_METHODS) <= set(READER_METHODS)
    assert set(BACKBONE_METHODS) < set(METHODS) and not set(BACKBONE_METHODS) & set(READER_METHODS)


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="choose one of"):
        TrainConfig(method="dpo")
    with pytest.raises(ConfigError, match="rag-ft"):
        resolve(TASKS, "dpo", "training method", error=ConfigError)
