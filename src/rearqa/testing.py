"""Tiny tokenizers and Llama models for the tests of every wing: reader, backbone transforms,
adapters and kernels (STYLE rule 6: tiny configs).

Nothing here touches the network or the real checkpoint: the tokenizer is a word-level
`tokenizers` model over a few dozen words with a chat template, the model a 2-layer Llama.
"""
from __future__ import annotations

WORDS = ("the a of in is was who what where when which wrote written by play tragedy hamlet "
         "shakespeare paris capital france city river london england born year music band "
         "answer question passage relevant irrelevant score user assistant system yes no").split()
SPECIALS = ["<unk>", "<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|>"
                 "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant {% endif %}")


def tiny_tokenizer(bos: bool = True):
    """A word-level tokenizer (vocab = 6 specials + the words above + '.' '?' ','), bos optional."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + list(WORDS) + [".", "?", ","])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if bos:
        backend.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>",
                                        pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_llama(vocab_size: int, tied: bool = True, hidden_size: int = 16, seed: int = 0):
    """A 2-layer Llama (2 query heads, 1 KV head) with random weights."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size,
                         intermediate_size=2 * hidden_size, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                         tie_word_embeddings=tied, pad_token_id=1, bos_token_id=2, eos_token_id=3)
    model = LlamaForCausalLM(config).eval()
    # Larger output weights than the 0.02 default, so logit differences are well above fp noise.
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(std=0.3)
    return model
