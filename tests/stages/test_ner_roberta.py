"""NER with a RoBERTa-family (byte-level BPE) tokenizer: a word given alone must get the
sub-tokens it gets in running text (``Ġlot``, not ``l``, ``ot``), in preprocess-ner, in the
model artifact's tokenizer and so in a plain ``pipeline()``. The model is built here: a
byte-level BPE vocabulary trained on the sentences and a two-layer RoBERTa."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NAMES = ["Alice", "Bob", "Carol", "Dave", "Erin"]
PLACES = ["Paris", "London", "Berlin", "Rome"]
TEMPLATES = [
    ("{per} saw a lot of people in {loc}", "B-PER O O O O O O B-LOC"),
    ("{per} lives in {loc} with a lot of cats", "B-PER O O B-LOC O O O O O"),
    ("{loc} has a lot of rain says {per}", "B-LOC O O O O O O B-PER"),
]


def _sentences() -> list[tuple[list[str], list[str]]]:
    return [
        (text.format(per=per, loc=loc).split(), tags.split())
        for text, tags in TEMPLATES
        for per in NAMES
        for loc in PLACES
    ]


@pytest.fixture(scope="module")
def roberta(tmp_path_factory) -> Path:
    """A tiny RoBERTa masked LM and its byte-level BPE tokenizer, saved as safetensors without
    add_prefix_space (as roberta-base ships)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaForMaskedLM, RobertaTokenizerFast

    root = tmp_path_factory.mktemp("roberta")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        [" ".join(words) for words, _ in _sentences()],
        vocab_size=400,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        show_progress=False,
    )
    bpe.save_model(str(root))
    tokenizer = RobertaTokenizerFast(vocab=str(root / "vocab.json"), merges=str(root / "merges.txt"))
    model_dir = root / "model"
    tokenizer.save_pretrained(model_dir)
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=130,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    RobertaForMaskedLM(config).save_pretrained(model_dir)
    assert (model_dir / "model.safetensors").is_file()
    return model_dir


@pytest.fixture(scope="module")
def dataset(roberta, tmp_path_factory) -> Path:
    from kfnlp.stages.preprocess_ner import NerPreprocessConfig, preprocess_ner

    root = tmp_path_factory.mktemp("roberta-ner")
    source = root / "train.conll"
    source.write_text(
        "".join("".join(f"{w}\t{t}\n" for w, t in zip(*s, strict=True)) + "\n" for s in _sentences()),
        encoding="utf-8",
    )
    preprocess_ner(str(root / "dataset"), NerPreprocessConfig(source=str(source), max_length=64), str(roberta))
    return root / "dataset"


@pytest.fixture(scope="module")
def model(dataset, roberta, tmp_path_factory) -> Path:
    from kfnlp.stages.train_ner import TrainNerConfig, train_ner

    out = tmp_path_factory.mktemp("roberta-ner") / "model"
    config = TrainNerConfig(learning_rate=3e-3, batch_size=8, num_epochs=3, logging_steps=50, save_strategy="no")
    train_ner(str(dataset), str(out), config, str(roberta))
    return out


def _rows(dataset: Path):
    import datasets

    data = datasets.load_from_disk(str(dataset / "data"))
    return [row for split in data.values() for row in split]


def test_the_base_tokenizer_splits_a_lone_word_differently(roberta):
    """The trap this guards against, present in the fixture: saved as roberta-base is, the tokenizer
    gives "lot" alone other sub-tokens than "lot" in text."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(roberta)
    alone = tokenizer(["a", "lot"], is_split_into_words=True, add_special_tokens=False)["input_ids"]
    assert alone != tokenizer("a lot", add_special_tokens=False)["input_ids"]


def test_stored_subtokens_are_those_of_running_text_including_the_first_word(dataset):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(dataset / "tokenizer")
    for row in _rows(dataset):
        in_text = tokenizer(" ".join(row["tokens"]))
        assert row["input_ids"] == in_text["input_ids"], row["tokens"]
        assert row["word_ids"] == [-1 if w is None else w for w in in_text.word_ids()]
        pieces = tokenizer.convert_ids_to_tokens(row["input_ids"])
        assert pieces[1] == "Ġ" + row["tokens"][0]  # the first word too reads as a word start
        if "lot" in row["tokens"]:
            assert "Ġlot" in pieces and "ot" not in pieces


def test_train_evaluate_and_predict_tokenize_alike(model, dataset, tmp_path):
    from transformers import pipeline

    from kfnlp.predict import entities
    from kfnlp.stages.evaluate_ner import EvaluateNerConfig, evaluate_ner

    assert json.loads((model / "tokenizer_config.json").read_text())["add_prefix_space"] is True
    tagger = pipeline("token-classification", model=str(model))  # plain transformers, the artifact as saved
    for row in _rows(dataset):
        assert tagger.tokenizer(" ".join(row["tokens"]))["input_ids"] == row["input_ids"]

    result = evaluate_ner(str(model), str(dataset), str(tmp_path / "eval"), EvaluateNerConfig(), label="roberta")
    assert result["tag_scheme"] == "iob2" and result["metrics"]["words"] > 0
    [item] = entities(str(model), ["Alice saw a lot of people in Paris"])
    assert isinstance(item["entities"], list)
