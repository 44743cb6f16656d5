"""evaluate: kfnlp's perplexity is exp of the loss plain transformers computes."""

from __future__ import annotations

import math
from pathlib import Path

import datasets
import pytest
import torch
from transformers import AutoModelForMaskedLM

from kfnlp.artifacts import read_evaluation
from kfnlp.assets import resolve_model_ref
from kfnlp.errors import InputError
from kfnlp.metrics import perplexity
from kfnlp.stages.evaluate import METRICS, EvaluateConfig, evaluate_mlm


def stock_loss(eval_set: Path) -> float:
    """The stock model's mean loss over the whole masked set in one batch."""
    model = AutoModelForMaskedLM.from_pretrained(resolve_model_ref("builtin:splade-tiny")).eval()
    data = datasets.load_from_disk(str(eval_set / "data")).with_format("torch")[:]
    with torch.inference_mode():
        out = model(
            input_ids=data["input_ids"].long(),
            attention_mask=data["attention_mask"].long(),
            labels=data["labels"].long(),
        )
    return float(out.loss)


@pytest.mark.parametrize("sparse_head", [True, False])
def test_perplexity_equals_exp_of_plain_transformers_loss(tiny_eval_set, tmp_path, sparse_head):
    expected = math.exp(stock_loss(tiny_eval_set))
    config = EvaluateConfig(batch_size=16, sparse_head=sparse_head, prompts=["a [MASK] film."], top_k=3)
    result = evaluate_mlm("builtin:splade-tiny", str(tiny_eval_set), str(tmp_path / "ev"), config, "base")
    assert result["metrics"]["perplexity"] == pytest.approx(expected, rel=1e-4)
    assert set(METRICS) <= set(result["metrics"])  # what a sweep may select on is written
    assert result["sparse_head"] is sparse_head
    assert len(result["fill_mask"][0]["predictions"]) == 3
    assert read_evaluation(str(tmp_path / "ev"))["metrics"] == result["metrics"]
    assert "Fill-mask" in (tmp_path / "ev" / "report.md").read_text()


def test_perplexity_is_token_weighted():
    assert perplexity(2.0 * 3 + 4.0 * 1, 4) == pytest.approx(math.exp(2.5))
    with pytest.raises(ValueError):
        perplexity(1.0, 0)


def test_refuses_a_model_with_another_vocabulary(tiny_eval_set, tmp_path):
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    # transformers 5 takes the vocabulary itself (a vocab_file= is ignored: only the special tokens remain)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "film"]
    tok = BertTokenizerFast(vocab={word: i for i, word in enumerate(words)})
    assert tok.tokenize("a film") == ["a", "film"]
    other = tmp_path / "other"
    BertForMaskedLM(
        BertConfig(vocab_size=7, hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8)
    ).save_pretrained(other)
    tok.save_pretrained(other)
    with pytest.raises(InputError, match="different vocabulary"):
        evaluate_mlm(str(other), str(tiny_eval_set), str(tmp_path / "ev"), EvaluateConfig(), "other")
    assert not (tmp_path / "ev").exists()


def test_evaluation_page_plots_the_perplexity_and_each_prompts_fill_mask_scores(tiny_eval_set, tmp_path):
    from tests.support.html_page import check_self_contained, read_page

    config = EvaluateConfig(batch_size=16, prompts=["a [MASK] film.", "no mask here"], top_k=4)
    result = evaluate_mlm("builtin:splade-tiny", str(tiny_eval_set), str(tmp_path / "ev"), config, "base")
    page = read_page((tmp_path / "ev" / "report.html").read_text(encoding="utf-8"))
    check_self_contained(page)
    assert page.headings[0] == "Evaluation: base" and "Fill-mask" in page.headings
    assert page.plots == ["Masked-LM perplexity: base", "a [MASK] film."]  # the prompt without [MASK]: a line
    assert page.figures_with_plot == 2
    assert page.elements("perplexity") == 1 and page.elements("scores-0") == 4  # one bar per top-k token
    assert f"{result['metrics']['perplexity']:,.1f}" in (tmp_path / "ev" / "report.html").read_text(encoding="utf-8")
