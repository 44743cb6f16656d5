"""NER data path, unit level: CoNLL reading/writing, IOB labels and their alignment
to sub-tokens (the recipe's ``align_labels_with_tokens``)."""

from __future__ import annotations

import numpy as np
import pytest

from kfnlp.data.chunking import IGNORE_INDEX
from kfnlp.data.conll import Sentence, read_conll, write_conll
from kfnlp.data.ner import (
    align_labels,
    check_labels,
    check_tag,
    continuation_ids,
    encode,
    label_list,
    repair_iob,
    word_predictions,
)
from kfnlp.errors import InputError

CONLL = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
ID = {name: i for i, name in enumerate(CONLL)}
ZWSP = "\u200b"
EMOJI = "\U0001f600"


@pytest.fixture(scope="module")
def minilm():
    from kfnlp.modeling import load_tokenizer

    tokenizer = load_tokenizer("builtin:minilm")
    assert tokenizer.is_fast
    return tokenizer


# ---- align_labels / continuation_ids ---------------------------------------------


def test_align_labels_reproduces_the_recipe_example():
    # "EU rejects German call to boycott British lamb ." (CoNLL-2003 train[0]),
    # word_ids and labels exactly as printed in the recipe; "lamb" -> "la", "##mb"
    word_ids = [None, 0, 1, 2, 3, 4, 5, 6, 7, 7, 8, None]
    labels = [3, 0, 7, 0, 0, 0, 7, 0, 0]
    expected = [-100, 3, 0, 7, 0, 0, 0, 7, 0, 0, 0, -100]
    assert align_labels(labels, word_ids, continuation_ids(CONLL), label_all=True) == expected
    assert IGNORE_INDEX == -100


def test_align_labels_b_word_split_in_three():
    # "Kalashnikov spoke ." with "Kalashnikov" (B-PER) -> kala ##sh ##nikov
    word_ids = [None, 0, 0, 0, 1, 2, None]
    labels = [ID["B-PER"], ID["O"], ID["O"]]
    to_inside = continuation_ids(CONLL)
    b_per, i_per = ID["B-PER"], ID["I-PER"]
    assert align_labels(labels, word_ids, to_inside, label_all=True) == [-100, b_per, i_per, i_per, 0, 0, -100]
    assert align_labels(labels, word_ids, to_inside, label_all=False) == [-100, b_per, -100, -100, 0, 0, -100]


def test_align_labels_continuation_of_i_and_o_words_keeps_the_label():
    word_ids = [None, 0, 0, 1, 1, 1, None]
    labels = [ID["I-ORG"], ID["O"]]
    out = align_labels(labels, word_ids, continuation_ids(CONLL), label_all=True)
    assert out == [-100, ID["I-ORG"], ID["I-ORG"], 0, 0, 0, -100]


def test_align_labels_special_tokens_as_none_or_minus_one():
    labels = [ID["B-LOC"], ID["O"]]
    to_inside = continuation_ids(CONLL)
    # stored word_ids use -1 on special tokens; a pair/sep in the middle is special too
    assert align_labels(labels, [-1, 0, -1, 1, -1], to_inside, True) == [-100, ID["B-LOC"], -100, 0, -100]
    assert align_labels(labels, [None, None, 0, 1, None, None], to_inside, False) == [
        -100,
        -100,
        ID["B-LOC"],
        0,
        -100,
        -100,
    ]
    assert align_labels([], [None, None], to_inside, True) == [-100, -100]


def test_continuation_ids_conll_order_matches_the_recipe_trick():
    ids = continuation_ids(CONLL)
    assert ids.tolist() == [0, 2, 2, 4, 4, 6, 6, 8, 8]
    assert ids.tolist() == [i + 1 if i % 2 == 1 else i for i in range(len(CONLL))]


@pytest.mark.parametrize(
    "labels, expected",
    [
        # WNUT-style: label names sorted, O last
        (
            ["B-corporation", "B-location", "I-corporation", "I-location", "O"],
            [2, 3, 2, 3, 4],
        ),
        # O last, pairs in order
        (["B-PER", "I-PER", "B-LOC", "I-LOC", "O"], [1, 1, 3, 3, 4]),
        # I- before B-
        (["O", "I-PER", "B-PER"], [0, 1, 1]),
    ],
    ids=["wnut-sorted", "o-last", "i-before-b"],
)
def test_continuation_ids_by_name_where_label_mod_2_is_wrong(labels, expected):
    ids = continuation_ids(labels)
    assert ids.tolist() == expected
    for i, name in enumerate(labels):
        target = labels[ids[i]]
        assert target == ("I-" + name[2:] if name.startswith("B-") else name)
    trick = [i + 1 if i % 2 == 1 else i for i in range(len(labels))]
    assert trick != expected  # the recipe's shortcut would mislabel these orders


def test_continuation_ids_align_with_a_non_conll_order():
    labels = ["B-corporation", "B-location", "I-corporation", "I-location", "O"]
    word_ids = [None, 0, 0, 1, 1, None]
    out = align_labels([0, 4], word_ids, continuation_ids(labels), label_all=True)
    assert [labels[i] if i >= 0 else None for i in out] == [
        None,
        "B-corporation",
        "I-corporation",
        "O",
        "O",
        None,
    ]


def test_continuation_ids_b_without_i_maps_to_itself():
    assert continuation_ids(["O", "B-X"]).tolist() == [0, 1]


# ---- encode with a real tokenizer ------------------------------------------------


def _sentences() -> tuple[list[Sentence], list[list[int]]]:
    raw = [
        (
            ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
            ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"],
        ),
        (
            ["Mikhail", "Kalashnikov", "met", "Zelenskyy", "in", "Kyiv", "."],
            ["B-PER", "I-PER", "O", "B-PER", "O", "B-LOC", "O"],
        ),
        (
            ["so", ZWSP, "happy", EMOJI, "in", "Paris", ZWSP, "!"],
            ["O", "O", "O", "O", "O", "B-LOC", "O", "O"],
        ),
        (["Schwarzenegger"], ["B-PER"]),
    ]
    sentences = [Sentence(tokens, tags, f"test:{i}") for i, (tokens, tags) in enumerate(raw)]
    return sentences, [[ID[t] for t in s.tags] for s in sentences]


def test_encode_aligns_first_subtoken_of_every_word(minilm):
    sentences, tag_ids = _sentences()
    enc = encode(minilm, sentences, tag_ids, CONLL, max_length=64)
    assert enc.truncated == 0
    assert enc.empty_words == 2  # the two zero-width spaces; the emoji is [UNK], not empty
    to_inside = continuation_ids(CONLL)
    for sentence, ids, labels, word_ids, tags in zip(
        sentences, enc.input_ids, enc.labels, enc.word_ids, tag_ids, strict=True
    ):
        assert len(labels) == len(ids) == len(word_ids)
        assert ids[0] == minilm.cls_token_id and ids[-1] == minilm.sep_token_id
        assert labels[0] == labels[-1] == -100 and word_ids[0] == word_ids[-1] == -1
        # no word lost its position, in order
        words = [w for w in word_ids if w >= 0]
        assert sorted(set(words)) == list(range(len(sentence.tokens)))
        assert words == sorted(words)
        previous = -1
        for label, word in zip(labels, word_ids, strict=True):
            if word < 0:
                assert label == -100
            elif word != previous:
                assert label == tags[word]
            else:
                assert label == to_inside[tags[word]]
            previous = word
        # a perfect prediction gives every word its label back
        assert word_predictions(labels, word_ids, len(sentence.tokens)) == tags


def test_encode_split_b_word_gets_i_continuations(minilm):
    sentences, tag_ids = _sentences()
    enc = encode(minilm, sentences[3:], tag_ids[3:], CONLL, max_length=64)
    pieces = minilm.convert_ids_to_tokens(enc.input_ids[0])
    assert pieces == ["[CLS]", "schwarz", "##ene", "##gger", "[SEP]"]
    assert enc.labels[0] == [-100, ID["B-PER"], ID["I-PER"], ID["I-PER"], -100]
    enc = encode(minilm, sentences[3:], tag_ids[3:], CONLL, max_length=64, label_all_subtokens=False)
    assert enc.labels[0] == [-100, ID["B-PER"], -100, -100, -100]


def test_encode_vanishing_words_become_unknown_and_keep_their_position(minilm):
    sentences, tag_ids = _sentences()
    enc = encode(minilm, sentences[2:3], tag_ids[2:3], CONLL, max_length=64)
    pieces = minilm.convert_ids_to_tokens(enc.input_ids[0])
    word_ids = enc.word_ids[0]
    for position in (1, 3, 6):  # ZWSP, emoji, ZWSP
        assert word_ids.count(position) == 1
        assert pieces[word_ids.index(position)] == minilm.unk_token
    assert enc.empty_words == 2
    # the input sentence is not modified
    assert sentences[2].tokens[1] == ZWSP


def test_encode_truncates_at_max_length_and_counts(minilm):
    sentences, tag_ids = _sentences()
    full = encode(minilm, sentences, tag_ids, CONLL, max_length=512)
    lengths = [len(ids) for ids in full.input_ids]
    max_length = 8
    enc = encode(minilm, sentences, tag_ids, CONLL, max_length=max_length)
    assert enc.truncated == sum(n > max_length for n in lengths) == 3
    for sentence, ids, labels, word_ids, tags in zip(
        sentences, enc.input_ids, enc.labels, enc.word_ids, tag_ids, strict=True
    ):
        assert len(ids) == len(labels) == len(word_ids) <= max_length
        assert ids[-1] == minilm.sep_token_id and labels[-1] == -100
        words = word_predictions(labels, word_ids, len(sentence.tokens))
        kept = [w for w in words if w is not None]
        assert words[: len(kept)] == tags[: len(kept)]  # the words that fit keep their labels
        assert all(w is None for w in words[len(kept) :])  # cut words have no prediction
    assert encode(minilm, sentences, tag_ids, CONLL, max_length=512).truncated == 0


def test_word_predictions_takes_the_first_subtoken():
    # word 1 has three sub-tokens predicted differently: the first one counts
    assert word_predictions([9, 1, 5, 6, 6, 0, 9], [-1, 0, 1, 1, 1, 2, -1], 3) == [1, 5, 0]
    assert word_predictions([9, 1, 9], [-1, 0, -1], 3) == [1, None, None]


# ---- label_list / check_tag / check_labels ---------------------------------------


def test_label_list_o_first_then_types_sorted_with_both_forms():
    sentences = [
        Sentence(["a", "b", "c", "d"], ["B-PER", "O", "B-LOC", "I-LOC"], "f:1"),
        Sentence(["e"], ["B-MISC"], "f:6"),  # only B- of MISC: I-MISC is added
        Sentence(["f", "g"], ["O", "I-ORG"], "f:8"),  # only I- of ORG: B-ORG is added
    ]
    assert label_list(sentences) == ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert label_list([Sentence(["x"], ["O"], "f:1")]) == ["O"]


@pytest.mark.parametrize("tag", ["PER", "E-PER", "S-PER", "B-", "I-", "b-PER", "", "o"])
def test_check_tag_rejects_non_iob2(tag):
    with pytest.raises(InputError, match="is not IOB2"):
        check_tag(tag, "f.conll:3")


@pytest.mark.parametrize("tag", ["O", "B-PER", "I-PER", "B-X", "I-creative-work"])
def test_check_tag_accepts_iob2(tag):
    check_tag(tag, "here")


@pytest.mark.parametrize("tag", ["B-PER\u00a0", "I-LOC\u200b", "B-OR G", "B-X\ufeff", "I-Y\t"])
def test_check_tag_rejects_hidden_characters_that_would_make_a_new_type(tag):
    with pytest.raises(InputError, match=r"f.conll:3: tag .* holds U\+"):
        check_tag(tag, "f.conll:3")


def test_read_conll_tag_with_trailing_no_break_space_names_its_line(tmp_path):
    path = _write(tmp_path, "New\tB-LOC\nYork\tI-LOC\u00a0\n")
    with pytest.raises(InputError) as err:
        label_list(read_conll(path))
    assert str(err.value).startswith(f"{path}:2: tag 'I-LOC\\xa0' holds U+00A0 (NO-BREAK SPACE)")


def test_label_list_names_the_line_of_a_bad_tag():
    sentences = [Sentence(["a", "b", "c"], ["O", "O", "E-PER"], "data.conll:7")]
    with pytest.raises(InputError) as err:
        label_list(sentences)
    assert str(err.value) == (
        "data.conll:9: tag 'E-PER' is not IOB2 (expected O, B-TYPE or I-TYPE); "
        "for other tags (part-of-speech, ...) set preprocess_ner.tag_scheme: plain"
    )
    hub = [Sentence(["a", "b"], ["O", "X"], "hf:data/train row 4")]
    with pytest.raises(InputError, match=r"hf:data/train row 4 \(token 2\): tag 'X'"):
        label_list(hub)


def test_check_labels():
    check_labels(CONLL)
    check_labels(["B-corporation", "B-location", "I-corporation", "I-location", "O"])
    with pytest.raises(InputError, match="I-LOC missing"):
        check_labels(["O", "B-LOC"], "cfg.labels")
    with pytest.raises(InputError, match="duplicate labels"):
        check_labels(["O", "B-PER", "I-PER", "O"])
    with pytest.raises(InputError, match=r"cfg.labels: tag 'PER' is not IOB2"):
        check_labels(["O", "PER"], "cfg.labels")


# ---- plain tags (part-of-speech, ...) ------------------------------------------------


def test_plain_label_list_is_the_sorted_distinct_tags():
    sentences = [Sentence(["The", "cat", "sat"], ["DT", "NN", "VBD"], "f:1"), Sentence(["Cats"], ["NNS"], "f:5")]
    assert label_list(sentences, "plain") == ["DT", "NN", "NNS", "VBD"]
    with pytest.raises(InputError, match="tag_scheme: plain"):
        label_list(sentences)  # iob2: NN is not an entity tag; the error names the way out


@pytest.mark.parametrize("tag", ["NN", "B-PER", "PRP$", "-LRB-", ":", "O"])
def test_check_tag_plain_accepts_any_visible_tag(tag):
    check_tag(tag, "here", "plain")


@pytest.mark.parametrize("tag", ["NN\u00a0", "VB\u200b", ""])
def test_check_tag_plain_rejects_hidden_characters_and_empty_tags(tag):
    with pytest.raises(InputError, match=r"f.conll:3: (tag .* holds U\+|empty tag)"):
        check_tag(tag, "f.conll:3", "plain")


def test_check_labels_plain_needs_no_i_forms_but_no_duplicates():
    check_labels(["B-X", "NN"], "cfg.labels", "plain")
    with pytest.raises(InputError, match="duplicate labels"):
        check_labels(["NN", "VB", "NN"], "cfg.labels", "plain")


def test_continuation_ids_plain_keeps_each_tag_even_a_b_looking_one():
    assert continuation_ids(["B-X", "I-X", "NN"], "plain").tolist() == [0, 1, 2]


@pytest.mark.parametrize("label_all", [True, False])
def test_encode_plain_continuations_get_the_word_tag_or_minus_100(minilm, label_all):
    labels = ["B-X", "I-X", "NN"]  # a plain tag that looks like IOB2 must not turn into its I- form
    sentences = [Sentence(["Schwarzenegger", "x"], ["B-X", "NN"], "f:1")]
    enc = encode(minilm, sentences, [[0, 2]], labels, max_length=32, label_all_subtokens=label_all, scheme="plain")
    word_ids, aligned = enc.word_ids[0], enc.labels[0]
    first_word = [label for label, w in zip(aligned, word_ids, strict=True) if w == 0]
    assert len(first_word) > 1 and first_word[0] == 0
    assert set(first_word[1:]) == ({0} if label_all else {IGNORE_INDEX})


# ---- repair_iob -------------------------------------------------------------------


@pytest.mark.parametrize(
    "tags, fixed, count",
    [
        (["I-PER", "I-PER"], ["B-PER", "I-PER"], 1),  # at sentence start
        (["O", "I-LOC", "O"], ["O", "B-LOC", "O"], 1),  # after O
        (["B-PER", "I-LOC", "I-LOC"], ["B-PER", "B-LOC", "I-LOC"], 1),  # after another type
        (["I-PER", "O", "I-PER", "I-ORG"], ["B-PER", "O", "B-PER", "B-ORG"], 3),
        (["B-PER", "I-PER", "I-PER", "O", "B-LOC", "B-LOC"], ["B-PER", "I-PER", "I-PER", "O", "B-LOC", "B-LOC"], 0),
        ([], [], 0),
    ],
)
def test_repair_iob(tags, fixed, count):
    original = list(tags)
    assert repair_iob(tags) == (fixed, count)
    assert tags == original  # not modified in place


# ---- read_conll / write_conll ----------------------------------------------------


def _write(tmp_path, content: bytes | str, name="data.conll"):
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def _read(path, **kwargs):
    return [(s.tokens, s.tags, s.origin) for s in read_conll(path, **kwargs)]


def test_read_conll_tab_space_and_extra_columns(tmp_path):
    path = _write(
        tmp_path,
        "-DOCSTART- -X- -X- O\n"
        "\n"
        "EU NNP B-NP B-ORG\n"
        "rejects\tVBZ\tB-VP\tO\n"
        "German   JJ  B-NP\tB-MISC\n"
        "\n"
        "Peter\tB-PER\n"
        "Blackburn I-PER\n",
    )
    assert _read(path) == [
        (["EU", "rejects", "German"], ["B-ORG", "O", "B-MISC"], f"{path}:3"),
        (["Peter", "Blackburn"], ["B-PER", "I-PER"], f"{path}:7"),
    ]


def test_read_conll_docstart_ends_a_sentence(tmp_path):
    path = _write(tmp_path, "a\tO\n-DOCSTART-\tO\nb\tO\n")
    assert _read(path) == [(["a"], ["O"], f"{path}:1"), (["b"], ["O"], f"{path}:3")]


def test_read_conll_whitespace_only_lines_separate_sentences(tmp_path):
    # WNUT-16 separates sentences with a line holding only a tab
    path = _write(tmp_path, "\n\na\tO\n\t\nb\tO\n   \nc\tB-X\n \t \n\n\nd\tO")
    assert [s[0] for s in _read(path)] == [["a"], ["b"], ["c"], ["d"]]
    assert [s[2] for s in _read(path)] == [f"{path}:3", f"{path}:5", f"{path}:7", f"{path}:11"]


def test_read_conll_crlf_cr_and_bom(tmp_path):
    expected = [(["Ünïcode", "ok"], ["B-X", "O"]), (["x"], ["O"])]
    for name, content in {
        "crlf": "\ufeffÜnïcode\tB-X\r\nok\tO\r\n\r\nx\tO\r\n",
        "cr": "Ünïcode\tB-X\rok\tO\r\rx\tO\r",
        "bom-lf": "\ufeffÜnïcode B-X\nok O\n\nx O",
    }.items():
        path = _write(tmp_path, content, f"{name}.conll")
        assert [(t, g) for t, g, _ in _read(path)] == expected, name
        assert _read(path)[1][2] == f"{path}:4", name


def test_read_conll_keeps_emoji_and_zero_width_tokens(tmp_path):
    tokens = [EMOJI, ZWSP, "\u200d", "\ufe0f", "👍🏽", "🇩🇪", "a\u200bb"]
    path = _write(tmp_path, "".join(f"{t}\tO\n" for t in tokens) + "\nend\tO\n")
    sentences = _read(path)
    assert sentences[0][0] == tokens
    assert sentences[1] == (["end"], ["O"], f"{path}:9")


def test_read_conll_other_unicode_space_and_line_separators_stay_in_the_token(tmp_path):
    # only tab/space separate columns and only \n, \r\n, \r end a line: U+2028, U+0085,
    # U+001E and a no-break space inside a token must not split it or shift line numbers
    tokens = ["wor\u2028ld", "New\u00a0York", "x\x85y", "rec\x1esep", "\u00a0"]
    path = _write(tmp_path, "".join(f"{t}\tO\n" for t in tokens) + "\nlast\tO\nbroken\n")
    with pytest.raises(InputError) as err:
        read_conll(path)
    assert str(err.value).startswith(f"{path}:8: expected a token and a tag")
    path = _write(tmp_path, "".join(f"{t}\tO\n" for t in tokens) + "\nlast\tO\n")
    assert _read(path) == [(tokens, ["O"] * 5, f"{path}:1"), (["last"], ["O"], f"{path}:7")]


def test_read_conll_line_without_tag_names_file_and_line(tmp_path):
    path = _write(tmp_path, "a\tO\nb\tO\n\nc\tO\nlonely\nd\tO\n")
    with pytest.raises(InputError) as err:
        read_conll(path)
    assert str(err.value) == (f"{path}:5: expected a token and a tag separated by a tab or space, got 'lonely'")


@pytest.mark.parametrize("content", [b"", b"\n\n", b"\t\n  \r\n\n", b"\xef\xbb\xbf", b"-DOCSTART- -X- O\n\n"])
def test_read_conll_without_sentences(tmp_path, content):
    path = _write(tmp_path, content)
    with pytest.raises(InputError, match=r"no sentences \(the file is empty or holds only blank lines\)"):
        read_conll(path)


def test_read_conll_encoding(tmp_path):
    path = _write(tmp_path, "a\tO\ncaf\u00e9\tB-X\n".encode("latin-1"))
    with pytest.raises(InputError) as err:
        read_conll(path)
    message = str(err.value)
    assert message.startswith(f"{path}:2: byte 0xe9 at column 4 is not valid utf-8")
    assert "encoding: latin-1" in message
    assert _read(path, encoding="latin-1")[0][0] == ["a", "caf\u00e9"]
    with pytest.raises(InputError, match="unknown encoding 'klingon'"):
        read_conll(path, encoding="klingon")


def test_read_conll_missing_file(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        read_conll(tmp_path / "nope.conll")


def test_write_conll_read_back_round_trip(tmp_path):
    sentences = [
        (["EU", "rejects", "German", "lamb", "."], ["B-ORG", "O", "B-MISC", "O", "O"]),
        ([EMOJI, ZWSP, "Café", "wor\u2028ld"], ["O", "O", "B-LOC", "O"]),
        (["x"], ["I-PER"]),
    ]
    path = tmp_path / "out.conll"
    write_conll(path, sentences)
    text = path.read_bytes().decode("utf-8")
    assert "\r" not in text and text.endswith("\n\n")
    assert text.startswith("EU\tB-ORG\nrejects\tO\n")
    assert [(t, g) for t, g, _ in _read(path)] == sentences

    # three columns (token, gold, predicted): reading takes the last as the tag
    predicted = [["O"] * len(tokens) for tokens, _ in sentences]
    write_conll(path, [(t, g, p) for (t, g), p in zip(sentences, predicted, strict=True)])
    assert [(t, g) for t, g, _ in _read(path)] == [(t, p) for (t, _), p in zip(sentences, predicted, strict=True)]


def test_write_conll_rejects_ragged_columns(tmp_path):
    with pytest.raises(ValueError):
        write_conll(tmp_path / "x.conll", [(["a", "b"], ["O"])])


def test_continuation_ids_is_an_integer_array():
    ids = continuation_ids(CONLL)
    assert isinstance(ids, np.ndarray) and ids.dtype.kind == "i"
