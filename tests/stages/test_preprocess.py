"""preprocess: sources, seeded split and downsample, fingerprints, counts."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest

from kfnlp.stages.preprocess import PreprocessConfig, preprocess, split_documents

MODEL = "builtin:splade-tiny"


def reviews(n: int) -> list[str]:
    return [f"review {i}: the film was {'good' if i % 2 else 'bad'} and the actors were fine. " * 6 for i in range(n)]


def test_seeded_split_is_deterministic_disjoint_and_downsampled():
    cfg = PreprocessConfig(max_documents=50, test_size=0.2, seed=3)
    train, test = split_documents(1000, cfg)
    again = split_documents(1000, cfg)
    other = split_documents(1000, PreprocessConfig(max_documents=50, test_size=0.2, seed=4))
    assert (len(train), len(test)) == (40, 10)
    assert not set(train) & set(test)
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])
    assert not np.array_equal(test, other[1])


def test_jsonl_with_nested_answers_and_manifest_counts(tmp_path):
    """ELI5-style records: answers.text is a list of strings, joined per document."""
    src = tmp_path / "eli5.jsonl"
    src.write_text("\n".join(json.dumps({"answers": {"text": [t, "second answer here"]}}) for t in reviews(40)))
    out = tmp_path / "ds"
    manifest = preprocess(
        str(out),
        PreprocessConfig(source=str(src), text_column="answers.text", chunk_size=32, test_size=0.25),
        tokenizer=MODEL,
    )
    counts = manifest["counts"]
    assert counts["train"]["documents"] == 30 and counts["test"]["documents"] == 10
    data = datasets.load_from_disk(str(out / "data"))
    assert len(data["train"]) == counts["train"]["chunks"] > 0
    assert counts["train"]["chunk_tokens"] == counts["train"]["chunks"] * 32 <= counts["train"]["tokens"]
    row = data["train"][0]
    assert len(row["input_ids"]) == 32 and row["labels"] == row["input_ids"]
    assert (out / "tokenizer" / "tokenizer.json").is_file()


def test_fingerprint_follows_data_config_and_tokenizer(tmp_path):
    src = tmp_path / "a.txt"
    src.write_text("\n".join(reviews(30)))
    base = PreprocessConfig(source=str(src), chunk_size=32)
    fp = preprocess(str(tmp_path / "1"), base, MODEL)["fingerprint"]
    assert preprocess(str(tmp_path / "2"), base, MODEL)["fingerprint"] == fp
    changed = PreprocessConfig(source=str(src), chunk_size=64)
    assert preprocess(str(tmp_path / "3"), changed, MODEL)["fingerprint"] != fp
    src.write_text("\n".join(reviews(31)))
    assert preprocess(str(tmp_path / "4"), base, MODEL)["fingerprint"] != fp


def test_hub_source_path_reads_a_dataset_repository(tmp_path):
    """`hf:` goes through datasets.load_dataset; a local dataset repository stands in
    for the Hub here (no network), exercising the same code path."""
    repo = tmp_path / "repo"
    repo.mkdir()
    datasets.Dataset.from_dict({"review": reviews(20)}).to_parquet(str(repo / "train.parquet"))
    manifest = preprocess(
        str(tmp_path / "ds"), PreprocessConfig(source=f"hf:{repo}", text_column="review", chunk_size=32), MODEL
    )
    assert manifest["counts"]["train"]["documents"] == 18
    assert manifest["config"]["source"] == f"hf:{repo}"


def test_too_little_text_for_one_chunk_is_a_clear_error(tmp_path):
    from kfnlp.errors import InputError

    src = tmp_path / "tiny.txt"
    src.write_text("one\ntwo\nthree\n")
    with pytest.raises(InputError, match="yields no chunk of 128 tokens"):
        preprocess(str(tmp_path / "ds"), PreprocessConfig(source=str(src), test_size=0.34), MODEL)
    assert not (tmp_path / "ds").exists()


def test_too_few_documents_names_the_source():
    from kfnlp.errors import InputError

    with pytest.raises(InputError, match="corpus.txt: only 1 documents"):
        split_documents(1, PreprocessConfig(source="corpus.txt"))


def test_a_gpt2_style_tokenizer_gets_end_of_text_between_documents(tmp_path):
    """A byte-level BPE tokenizer adds no special tokens: preprocess ends each document with its eos
    (<|endoftext|>, which is also its unknown token and is not counted as unknown)."""
    from kfnlp.data.bpe import train_bpe

    texts = reviews(20)
    tok = train_bpe(texts, vocab_size=400, model_max_length=64)
    tok.save_pretrained(tmp_path / "tok")
    src = tmp_path / "a.txt"
    src.write_text("\n".join(texts))
    config = PreprocessConfig(source=str(src), chunk_size=32, group_size=0)
    manifest = preprocess(str(tmp_path / "ds"), config, str(tmp_path / "tok"))
    train_docs = [texts[i] for i in split_documents(len(texts), config)[0]]
    stream = [i for t in train_docs for i in [*tok(t)["input_ids"], tok.eos_token_id]]
    counts = manifest["counts"]["train"]
    assert counts["tokens"] == len(stream) and counts["documents"] == len(train_docs)
    assert counts["unknown_tokens"] == 0 and counts["subtokens"] == len(stream) - len(train_docs)
    data = datasets.load_from_disk(str(tmp_path / "ds" / "data"))["train"].with_format("numpy")
    ids, word_ids = np.stack(data["input_ids"]).reshape(-1), np.stack(data["word_ids"]).reshape(-1)
    assert ids.tolist() == stream[: len(stream) // 32 * 32]
    assert (word_ids[ids == tok.eos_token_id] == -1).all() and (word_ids[ids != tok.eos_token_id] >= 0).all()
