"""The REAR reader core: special tokens, inputs, the rank-head model, LoRA, routing.

See model.py for how the rank head lives in the output layer (so a stock vLLM serves it),
routing.py for how the final answer is chosen and config.py for the settings and their names.
Names are imported on first use: `rearqa.reader.rear.config` stays torch-free for the config
modules that read it.
"""
from rearqa.registry import lazy_attributes

_LAZY = {
    "REAR_TOKENS": "rearqa.reader.rear.tokens:REAR_TOKENS",
    "RearConfig": "rearqa.reader.rear.config:RearConfig",
    "RearInput": "rearqa.reader.rear.inputs:RearInput",
    "RearModel": "rearqa.reader.rear.model:RearModel",
    "RearOutput": "rearqa.reader.rear.model:RearOutput",
    "RearTokenIds": "rearqa.reader.rear.tokens:RearTokenIds",
    "RoutingConfig": "rearqa.reader.rear.config:RoutingConfig",
    "RoutingDecision": "rearqa.reader.rear.routing:RoutingDecision",
    "add_lora": "rearqa.reader.rear.lora:add_lora",
    "add_rear_tokens": "rearqa.reader.rear.tokens:add_rear_tokens",
    "answer_confidence": "rearqa.reader.rear.routing:answer_confidence",
    "build_rear_input": "rearqa.reader.rear.inputs:build_rear_input",
    "choose_threshold": "rearqa.reader.rear.routing:choose_threshold",
    "collate_rear_inputs": "rearqa.reader.rear.inputs:collate_rear_inputs",
    "rear_token_ids": "rearqa.reader.rear.tokens:rear_token_ids",
    "route": "rearqa.reader.rear.routing:route",
    "token_logprobs": "rearqa.reader.rear.routing:token_logprobs",
    "trainable_parameter_counts": "rearqa.reader.rear.lora:trainable_parameter_counts",
}
__all__ = sorted(_LAZY)
__getattr__ = lazy_attributes(__name__, _LAZY)
