"""preprocess-cls on the embedded IMDB reviews and on small files, with the tiny encoder's tokenizer:
the artifact's columns and manifest, stratified splits and downsamples, dedupe, truncation counts,
text pairs, and the cls:train corpus for task-adaptive pretraining."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from kfnlp.errors import InputError
from kfnlp.stages.preprocess_cls import PreprocessClsConfig, preprocess_cls, quotas

MODEL = "builtin:splade-tiny"
SPLITS = ["cross_domain", "test", "train", "validation"]


def _load(out: Path):
    import datasets

    return datasets.load_from_disk(str(out / "data"))


def _manifest(out: Path) -> dict:
    return json.loads((out / "kfnlp-manifest.json").read_text(encoding="utf-8"))


def _write_csv(path: Path, rows: list[tuple[str, str]], header: str = "text,label") -> Path:
    import csv

    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header.split(","))
        writer.writerows(rows)
    return path


def _rows(per_class: dict[str, int]) -> list[tuple[str, str]]:
    """Distinct short texts, ``per_class[label]`` of each label, classes interleaved."""
    rows = [(f"review number {i} of {label} about a film", label) for label, n in per_class.items() for i in range(n)]
    return sorted(rows, key=lambda r: int(r[0].split()[2]))


@pytest.fixture(scope="module")
def imdb(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cls") / "dataset"
    preprocess_cls(str(out), PreprocessClsConfig(max_examples=40, max_length=64), MODEL)
    return out


def test_imdb_dataset_columns_labels_and_splits(imdb):
    manifest, data = _manifest(imdb), _load(imdb)
    assert manifest["kind"] == "dataset" and manifest["task"] == "cls"
    assert manifest["labels"] == ["neg", "pos"] and manifest["text_pair"] is False
    assert manifest["splits"] == SPLITS == sorted(data)
    assert json.loads((imdb / "labels.json").read_text()) == {
        "labels": ["neg", "pos"],
        "id2label": {"0": "neg", "1": "pos"},
        "label2id": {"neg": 0, "pos": 1},
    }
    for name in SPLITS:
        split = data[name]
        assert split.column_names == ["id", "text", "labels", "input_ids", "length"]
        assert split["id"] == [f"{name}-{i:06d}" for i in range(len(split))]
        assert split.features["labels"].dtype == "int64"
        assert all(len(ids) == n <= 64 for ids, n in zip(split["input_ids"], split["length"], strict=True))
        counts = manifest["counts"][name]
        assert counts["examples"] == len(split) == 40
        assert (
            counts["per_class"]
            == {"neg": 20, "pos": 20}
            == {label: split["labels"].count(i) for i, label in enumerate(["neg", "pos"])}
        )
        assert {"unknown_tokens", "subtokens", "unknown_share"} <= set(counts)
    assert manifest["counts"]["train"]["duplicates_removed"] == 96  # IMDB repeats 96 reviews
    assert "dropped_overlap_with_train" in manifest["counts"]["test"]
    train_texts = [json.loads(line)["text"] for line in (imdb / "corpus.jsonl").read_text().split("\n") if line]
    assert train_texts == data["train"]["text"]


def test_truncation_is_counted_per_split(imdb):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(imdb / "tokenizer"))
    manifest, data = _manifest(imdb), _load(imdb)
    for name in SPLITS:
        full = tok(list(data[name]["text"]), verbose=False)["input_ids"]
        assert manifest["counts"][name]["truncated"] == sum(len(ids) > 64 for ids in full)
        assert list(data[name]["input_ids"]) == [
            ids if len(ids) <= 64 else [*ids[:63], tok.sep_token_id] for ids in full
        ]
    assert manifest["counts"]["train"]["truncated"] > manifest["counts"]["cross_domain"]["truncated"]


def test_split_and_downsample_are_stratified_per_class(tmp_path):
    per_class = {"common": 120, "middle": 50, "rare": 10}
    source = _write_csv(tmp_path / "data.csv", _rows(per_class))
    config = PreprocessClsConfig(source=str(source), validation_size=0.2, test_size=0.3)
    manifest = preprocess_cls(str(tmp_path / "out"), config, MODEL)
    assert manifest["labels"] == ["common", "middle", "rare"]  # the names found, sorted
    counts = {name: manifest["counts"][name]["per_class"] for name in ("train", "validation", "test")}
    assert counts["test"] == {"common": 36, "middle": 15, "rare": 3}
    assert counts["validation"] == {"common": 24, "middle": 10, "rare": 2}
    assert counts["train"] == {"common": 60, "middle": 25, "rare": 5}
    texts = {name: set(split["text"]) for name, split in _load(tmp_path / "out").items()}
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["validation"]
    assert sum(map(len, texts.values())) == sum(per_class.values())

    small = preprocess_cls(str(tmp_path / "small"), PreprocessClsConfig(source=str(source), max_examples=18), MODEL)
    assert small["counts"]["train"]["per_class"] == {"common": 12, "middle": 5, "rare": 1}
    assert small["counts"]["test"]["per_class"] == {"common": 12, "middle": 5, "rare": 1}


def test_quotas_keep_proportions_and_every_class():
    import numpy as np

    assert quotas(np.array([120, 50, 10]), 18).tolist() == [12, 5, 1]
    assert quotas(np.array([1000, 1]), 10).tolist() == [9, 1]  # the rare class keeps one
    assert quotas(np.array([3, 3, 4]), 5).sum() == 5


def test_split_is_seeded(tmp_path):
    source = _write_csv(tmp_path / "data.csv", _rows({"a": 30, "b": 30}))

    def test_texts(seed: int, name: str) -> list[str]:
        preprocess_cls(str(tmp_path / name), PreprocessClsConfig(source=str(source), seed=seed), MODEL)
        return _load(tmp_path / name)["test"]["text"]

    assert test_texts(1, "one") == test_texts(1, "again") != test_texts(2, "other")


def test_dedupe_drops_repeats_and_overlap_with_train(tmp_path):
    rows = _rows({"neg": 20, "pos": 20})
    source = _write_csv(tmp_path / "train.csv", [*rows, rows[0], rows[1], (rows[2][0], "pos")])
    validation = _write_csv(tmp_path / "validation.csv", [rows[3], ("a new text", "neg"), ("a new text", "neg")])
    config = PreprocessClsConfig(source=str(source), validation_source=str(validation), test_size=0.0)
    manifest = preprocess_cls(str(tmp_path / "out"), config, MODEL)
    assert manifest["splits"] == ["train", "validation"]
    assert manifest["counts"]["train"]["duplicates_removed"] == 3  # same text, whatever its label
    assert manifest["counts"]["validation"]["dropped_overlap_with_train"] == 2
    assert _load(tmp_path / "out")["validation"]["text"] == ["a new text"]

    kept = PreprocessClsConfig(source=str(source), validation_source=str(validation), test_size=0.0, dedupe=False)
    manifest = preprocess_cls(str(tmp_path / "kept"), kept, MODEL)
    assert manifest["counts"]["train"]["examples"] == 43 and manifest["counts"]["validation"]["examples"] == 3


def test_text_pairs_and_integer_labels_named_by_config(tmp_path):
    records = [
        {"premise": f"a man plays football {i}", "pair": {"hypothesis": f"someone plays {i}"}, "gold": i % 3}
        for i in range(30)
    ]
    source = tmp_path / "nli.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    config = PreprocessClsConfig(
        source=str(source),
        text_column="premise",
        text_pair_column="pair.hypothesis",
        label_column="gold",
        labels=["entailment", "neutral", "contradiction"],
        max_length=8,
    )
    manifest = preprocess_cls(str(tmp_path / "out"), config, MODEL)
    assert manifest["text_pair"] is True and manifest["labels"] == ["entailment", "neutral", "contradiction"]
    train = _load(tmp_path / "out")["train"]
    assert train.column_names == ["id", "text", "text_pair", "labels", "input_ids", "token_type_ids", "length"]
    row = train[0]
    number = int(row["text"].split()[-1])
    assert row["text_pair"] == f"someone plays {number}" and row["labels"] == number % 3
    assert len(row["token_type_ids"]) == len(row["input_ids"]) == row["length"] == 8
    assert row["token_type_ids"][0] == 0 and row["token_type_ids"][-1] == 1
    assert (
        manifest["counts"]["train"]["truncated"] == manifest["counts"]["train"]["examples"]
    )  # 11 or 12 sub-tokens each
    corpus = (tmp_path / "out" / "corpus.jsonl").read_text().split("\n")[:-1]
    assert len(corpus) == 2 * len(train)  # text and pair, both the task's training text


def test_cls_train_source_reads_the_training_texts(imdb, tmp_path):
    from kfnlp.stages.preprocess import PreprocessConfig, preprocess, with_corpus

    config = with_corpus(PreprocessConfig(source="cls:train", chunk_size=32), str(imdb))
    assert config.source == str(imdb / "corpus.jsonl")
    manifest = preprocess(str(tmp_path / "mlm"), config, MODEL)
    assert sum(c["documents"] for c in manifest["counts"].values()) == 40
    with pytest.raises(InputError, match="a cls dataset, not an NER one"):
        with_corpus(PreprocessConfig(source="ner:train"), str(imdb))
    with pytest.raises(InputError, match="cls:train needs a preprocess-cls dataset"):
        with_corpus(PreprocessConfig(source="cls:train"), None)


def test_hub_dataset_splits_are_kept_and_downsampled_stratified(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["b", "a"])})
    repo = tmp_path / "repo" / "data"
    repo.mkdir(parents=True)
    for split, n in (("train", 40), ("test", 20)):
        rows = {"text": [f"{split} text {i}" for i in range(n)], "label": [i % 2 for i in range(n)]}
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(repo / f"{split}-00000-of-00001.parquet"))
    manifest = preprocess_cls(str(tmp_path / "out"), PreprocessClsConfig(source=f"hf:{repo.parent}"), MODEL)
    assert manifest["labels"] == ["b", "a"]  # ClassLabel order kept
    assert manifest["counts"]["test"]["per_class"] == {"b": 10, "a": 10}  # the source's own test split
    assert manifest["counts"]["validation"]["per_class"] == {"b": 2, "a": 2}  # carved out of train
    assert Counter(_load(tmp_path / "out")["train"]["labels"]) == {0: 18, 1: 18}
