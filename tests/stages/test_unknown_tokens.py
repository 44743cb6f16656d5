"""The unknown-token share in the preprocess manifests: real Chinese and Japanese text on the
English uncased vocabulary of builtin:splade-tiny turns most sub-tokens into [UNK]; the counts say
so and a warning names the stage, split, share and cause. English text stays below the threshold."""

from __future__ import annotations

import logging

import pytest

from kfnlp.data.unknown_tokens import WARN_SHARE, UnknownTokens
from kfnlp.modeling import load_tokenizer
from kfnlp.stages.preprocess import PreprocessConfig, preprocess
from kfnlp.stages.preprocess_ner import NerPreprocessConfig, preprocess_ner

MODEL = "builtin:splade-tiny"
CJK = [
    "这部电影的剧情非常精彩，演员的表演也很自然。",
    "我昨天和朋友一起去电影院看了这部新片。",
    "导演把故事讲得很清楚，但是结尾有点仓促。",
    "音乐和画面都很美，值得推荐给大家。",
    "虽然票价不便宜，我还是觉得很值得。",
    "この映画の物語はとても面白かったです。",
    "俳優の演技が自然で、最後まで楽しめました。",
]
ENGLISH = [
    "The plot of this film is wonderful and the actors are natural.",
    "Yesterday I went to the cinema with a friend to see this new film.",
    "The director tells the story clearly, but the ending is a little rushed.",
    "The music and the pictures are beautiful; I recommend it to everyone.",
]


def _documents(sentences: list[str], n: int = 40) -> list[str]:
    return [" ".join(sentences[(i + j) % len(sentences)] for j in range(3)) for i in range(n)]


def _warnings(caplog) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "unknown token" in r.getMessage()
    ]


def test_counter_counts_text_subtokens_only_and_nothing_without_an_unknown_token():
    tok = load_tokenizer(MODEL)
    counter = UnknownTokens(tok)
    counter.add_batch([[tok.cls_token_id, tok.unk_token_id, 2023, tok.sep_token_id], [tok.unk_token_id]])
    assert counter.facts("test", "train") == {"unknown_tokens": 2, "subtokens": 3, "unknown_share": round(2 / 3, 6)}

    class NoUnknown:  # byte-level BPE tokenizers never need one
        unk_token_id = None
        all_special_ids = [0, 2]

    counter = UnknownTokens(NoUnknown())
    counter.add([0, 5, 6, 2])
    assert counter.facts("test", "train") == {"unknown_tokens": 0, "subtokens": 2, "unknown_share": 0.0}


@pytest.mark.parametrize(("sentences", "warned"), [(CJK, True), (ENGLISH, False)])
def test_preprocess_counts_the_unknown_share_and_warns_above_the_threshold(tmp_path, caplog, sentences, warned):
    src = tmp_path / "corpus.txt"
    src.write_text("\n".join(_documents(sentences)), encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        manifest = preprocess(str(tmp_path / "ds"), PreprocessConfig(source=str(src), chunk_size=16), MODEL)
    for name in ("train", "test"):
        counts = manifest["counts"][name]
        assert 0 < counts["subtokens"] < counts["tokens"]  # [CLS]/[SEP] are not text
        assert counts["unknown_share"] == round(counts["unknown_tokens"] / counts["subtokens"], 6)
        assert (counts["unknown_share"] > WARN_SHARE) is warned
    if warned:
        assert manifest["counts"]["train"]["unknown_share"] > 0.5  # over half the sub-tokens lost
        messages = _warnings(caplog)
        assert len(messages) == 2
        assert messages[0].startswith("preprocess: train: ")
        assert "does not cover this text's script or language" in messages[0]
    else:
        assert manifest["counts"]["train"]["unknown_tokens"] == 0
        assert _warnings(caplog) == []


def test_preprocess_ner_counts_the_unknown_share_per_split(tmp_path, caplog):
    sentences = [[(ch, "B-LOC" if ch in "京国" else "O") for ch in s] for s in CJK * 4]
    src = tmp_path / "zh.conll"
    src.write_text("".join("".join(f"{t}\t{tag}\n" for t, tag in s) + "\n" for s in sentences), encoding="utf-8")
    config = NerPreprocessConfig(source=str(src), dedupe=False, validation_size=0.15, test_size=0.15)
    with caplog.at_level(logging.WARNING):
        manifest = preprocess_ner(str(tmp_path / "ner"), config, MODEL)
    for name in ("train", "validation", "test"):
        assert manifest["counts"][name]["unknown_share"] > WARN_SHARE
    assert {m.split(":")[1].strip() for m in _warnings(caplog)} == {"train", "validation", "test"}
    assert all(m.startswith("preprocess-ner: ") for m in _warnings(caplog))
