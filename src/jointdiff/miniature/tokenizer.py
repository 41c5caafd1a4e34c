"""The miniature's tokenizer: word level over the toy-world vocabulary, CLIP's special tokens."""

from __future__ import annotations

import string
from typing import Any

from jointdiff.miniature.config import IDENTIFIERS, TOKENS


def toy_tokenizer(max_length: int = TOKENS) -> Any:
    """A word-level tokenizer over the toy-world vocabulary (CLIP's special tokens, pads with EOS)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from jointdiff.data.toyworld.captions import vocabulary
    from jointdiff.data.toyworld.recipes import class_words

    special = ["<|startoftext|>", "<|endoftext|>", "<|unk|>"]
    words = [*special, *vocabulary(class_words()), *string.punctuation, *IDENTIFIERS]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|unk|>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", 0), ("<|endoftext|>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|unk|>",
        model_max_length=max_length,
    )
