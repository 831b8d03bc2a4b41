"""SpAtten: cascade token and head pruning with progressive quantisation, at inference time.

Paper: Wang, Zhang and Han, "SpAtten: Efficient Sparse Attention Architecture with Cascade Token
and Head Pruning" (HPCA 2021, arXiv 2012.09852). A token's importance is the attention probability
it receives, summed over heads and queries and accumulated over layers; each layer keeps the top
tokens, and a token pruned at one layer is gone from every later layer (the cascade). Heads are
pruned the same way by their accumulated output magnitude. Keys are fetched MSBs first, and a
query's LSBs only where its softmax is flat; per query only the values with large probabilities
are fetched. Here, in a causal reader, importance is divided by the number of queries that could
see each token (early tokens are seen by more of them), and the newest `recent` tokens (the
question, the token being decoded) are never pruned.

`window` (off by default) is rearqa's own variant, not the paper's: in the prefill only the prompt's
newest W queries (in a RAG prompt, the question and what follows it) vote for token importance, as
the observation window of SnapKV (Li et al., arXiv 2404.14469) does, because with every query
voting the passages' tokens vote for each other and the answer span is pruned more than the rest
(docs/backbone.md "SpAtten on the test sets"). Decode steps vote as before.

`prefill=0` (off by default) is rearqa's other variant: the prompt is read whole (every layer of
the prefill attends to every token, and its votes are accumulated as SpAtten's), and the cascade
starts at the first decode step, where each layer prunes down to its schedule; from the second
step on every layer reads the kept tokens only. It gives up the prefill's savings (1x there) for
the decode's, the phase where attention is bound by the KV bytes fetched per generated token, as
the decode-time KV selection of H2O (Zhang et al., arXiv 2306.14048) and SnapKV does. The first
answer token comes from the unpruned prefill, and REAR's rank head reads the unpruned prompt.

  config.py     SpAttenConfig: the budgets, their schedule over layers, the `spatten:...` string
  state.py      one generation's alive tokens and heads, and its SpAttenStats (FLOPs, bytes)
  attention.py  the attention function registered with transformers; install, track
  evidence.py   how often gold-answer tokens inside answer-bearing passages are pruned
  transform.py  SpAtten in the registry of inference-time backbones

SpAtten changes how a model runs, not its weights, and its budgets are chosen per run (an eval
sweeps them), so it is not a `BackboneTransform`: there is nothing to convert, export or load, and
its KV bytes per token depend on the input. It registers in `INFERENCE_BACKBONES` instead
(backbone/config.py), which the transformers engine applies over any loaded reader.
"""
