"""A GPT-2-style byte-level BPE tokenizer trained from texts (the course's "training a causal
language model from scratch" starts from one): no small causal-LM tokenizer ships offline.

Byte-level: every text tokenizes (the 256 byte symbols are in the alphabet), so nothing is ever
unknown; the one special token ``<|endoftext|>`` is bos, eos, unk and pad, as in GPT-2. The
pre-tokenizer adds no prefix space (GPT-2's own setting), so a document's first word is ``This``
and later ones ``ĠThis``. The post-processor adds no special token; preprocess then ends each
document with ``<|endoftext|>`` (:mod:`kfnlp.data.chunking`). Training is deterministic: the same
texts in the same order give the same tokenizer, byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable

from kfnlp.errors import ConfigError

END_OF_TEXT = "<|endoftext|>"
MIN_VOCAB = 257  # the 256 bytes and <|endoftext|>


def train_bpe(texts: Iterable[str], vocab_size: int = 8192, min_frequency: int = 2, model_max_length: int = 1024):
    """A byte-level BPE tokenizer of at most ``vocab_size`` tokens (merges seen at least
    ``min_frequency`` times) trained on ``texts``, as a ``transformers.PreTrainedTokenizerFast``
    whose ``save_pretrained`` directory ``AutoTokenizer`` reloads."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < MIN_VOCAB:
        raise ConfigError(
            f"vocab_size must be at least {MIN_VOCAB} (the 256 bytes and {END_OF_TEXT}), got {vocab_size}"
        )
    if min_frequency < 1:
        raise ConfigError(f"min_frequency must be at least 1, got {min_frequency}")
    if model_max_length < 1:
        raise ConfigError(f"model_max_length must be at least 1, got {model_max_length}")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    seen = [0]

    def counted():
        for text in texts:
            seen[0] += 1
            yield text

    backend.train_from_iterator(counted(), trainer=trainer)
    if not seen[0]:
        raise ConfigError("no text to train the BPE tokenizer on")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        unk_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
        model_max_length=model_max_length,
    )
