"""The REAR reader core: special tokens, inputs, the rank-head model, LoRA, routing.

See model.py for how the rank head lives in the output layer (so a stock vLLM serves it) and
routing.py for how the final answer is chosen.
"""
from rearqa.reader.rear.inputs import RearInput, build_rear_input, collate_rear_inputs
from rearqa.reader.rear.lora import add_lora, trainable_parameter_counts
from rearqa.reader.rear.model import RearConfig, RearModel, RearOutput
from rearqa.reader.rear.routing import (RoutingConfig, RoutingDecision, answer_confidence,
                                        choose_threshold, route, token_logprobs)
from rearqa.reader.rear.tokens import REAR_TOKENS, RearTokenIds, add_rear_tokens, rear_token_ids

__all__ = ["REAR_TOKENS", "RearConfig", "RearInput", "RearModel", "RearOutput", "RearTokenIds",
           "RoutingConfig", "RoutingDecision", "add_lora", "add_rear_tokens", "answer_confidence",
           "build_rear_input", "choose_threshold", "collate_rear_inputs", "rear_token_ids", "route",
           "token_logprobs", "trainable_parameter_counts"]
