"""The report plots (kfnlp.plots): self-contained, labelled, deterministic SVG whose elements hold the
data they were given (checked in the SVG's structure, not by looking at pixels)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from kfnlp import plots

SVG = "{http://www.w3.org/2000/svg}"
HISTORY = [
    {"step": 10, "epoch": 0.5, "loss": 6.1, "learning_rate": 2e-5},
    {"step": 20, "epoch": 1.0, "loss": 5.2, "learning_rate": 1e-5},
    {"step": 20, "epoch": 1.0, "eval_loss": 5.4},
    {"step": 30, "epoch": 1.5, "loss": 4.9, "learning_rate": 5e-6},
    {"step": 40, "epoch": 2.0, "eval_loss": 5.0},
]
STAGES = [
    {"name": "preprocess", "status": "succeeded", "started": 100.0, "wall_time_s": 5.0},
    {"name": "train-mlm", "status": "succeeded", "started": 106.0, "wall_time_s": 40.0, "reused": True},
    {"name": "evaluate", "status": "failed", "error": "boom"},
    {"name": "register", "status": "not run"},
]


def _all() -> dict[str, str]:
    return {
        "loss": plots.loss_curves(HISTORY, "train-mlm: loss"),
        "timeline": plots.timeline(STAGES),
        "perplexity": plots.perplexity_bars({"base": 5106.0, "adapted": 54.9}, "Perplexity"),
        "scores": plots.score_bars(
            {"base": {"PER": 0.5, "LOC": 0.7, "ORG": 0.2}, "adapted": {"PER": 0.6, "LOC": 0.65, "ORG": 0.3}},
            "F1",
            "F1 per entity type",
            (-0.01, 0.05),
        ),  # fmt: skip
        "confusion": plots.confusion_matrix(["neg", "pos", "mixed"], [[40, 10, 0], [5, 45, 1], [2, 2, 2]], "Confusion"),
    }


@pytest.fixture(scope="module")
def svgs() -> dict[str, str]:
    return _all()


def _by_id_suffix(root: ET.Element, suffix: str) -> list[ET.Element]:
    return [e for e in root.iter() if e.get("id", "").endswith("-" + suffix)]


def test_each_plot_is_self_contained_labelled_svg(svgs):
    for name, svg in svgs.items():
        root = ET.fromstring(svg)  # well-formed XML, no prolog or DOCTYPE to strip
        assert root.tag == SVG + "svg" and root.get("role") == "img", name
        title = root.find(SVG + "title")
        assert title is not None and title.text and title.text == root.get("aria-label"), name
        refs = re.findall(r'(?:href|src)="([^"]*)"', svg) + re.findall(r"url\(([^)]*)\)", svg)
        assert all(ref.startswith(("#", "data:")) for ref in refs), (name, [r for r in refs if r[:1] != "#"][:3])
        assert "<text" not in svg  # text drawn as paths: no font to load, the same on every machine


def test_same_data_same_bytes_and_no_id_shared_between_plots(svgs):
    assert _all() == svgs
    ids = [re.findall(r'\bid="([^"]+)"', svg) for svg in svgs.values()]
    flat = [i for group in ids for i in group]
    assert len(flat) == len(set(flat)), "ids repeat: two plots inlined in one page would clash"
    for svg, group in zip(svgs.values(), ids, strict=True):  # every reference resolves inside its own plot
        for ref in re.findall(r'href="#([^"]+)"', svg) + re.findall(r"url\(#([^)]+)\)", svg):
            assert ref in group


def test_loss_curves_draw_train_and_eval_loss(svgs):
    root = ET.fromstring(svgs["loss"])
    assert len(_by_id_suffix(root, "train-loss")) == 1 and len(_by_id_suffix(root, "eval-loss")) == 1
    only_train = ET.fromstring(plots.loss_curves([r for r in HISTORY if "loss" in r], "t"))
    assert _by_id_suffix(only_train, "train-loss") and not _by_id_suffix(only_train, "eval-loss")
    empty = ET.fromstring(plots.loss_curves([], "nothing logged"))
    assert not _by_id_suffix(empty, "train-loss") and empty.get("aria-label") == "nothing logged"


def test_timeline_has_one_bar_per_timed_stage(svgs):
    root = ET.fromstring(svgs["timeline"])
    assert [i for i in range(len(STAGES)) if _by_id_suffix(root, f"stage-{i}")] == [0, 1]


def test_score_bars_group_one_bar_per_model_and_name(svgs):
    root = ET.fromstring(svgs["scores"])
    for model in (0, 1):  # PER, LOC, ORG
        assert [k for k in range(4) if _by_id_suffix(root, f"scores-{model}-{k}")] == [0, 1, 2]
    assert _by_id_suffix(root, "interval")
    assert not _by_id_suffix(ET.fromstring(plots.score_bars({"a": {"X": 1.0}}, "F1", "t")), "interval")


def test_confusion_matrix_has_a_cell_per_pair(svgs):
    root = ET.fromstring(svgs["confusion"])
    (matrix,) = _by_id_suffix(root, "matrix")
    assert len(matrix.findall(f".//{SVG}path")) == 9


def test_perplexity_bars_one_bar_per_model():
    def label(values):
        svg = plots.perplexity_bars(values, "p")
        root = ET.fromstring(svg)
        return [k for k in range(3) if _by_id_suffix(root, f"perplexity-{k}")]

    assert label({"base": 5106.0, "adapted": 54.9}) == [0, 1]
    assert label({"only": 12.0}) == [0]
    assert label({}) == []
