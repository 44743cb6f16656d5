"""The sparse MLM forward must be a drop-in for the stock one: same loss, same
gradients, stock behaviour without labels, and no patching of unknown models."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import (
    AlbertConfig,
    AlbertForMaskedLM,
    DistilBertConfig,
    DistilBertForMaskedLM,
    RobertaConfig,
    RobertaForMaskedLM,
)

from kfnlp.data.chunking import IGNORE_INDEX
from kfnlp.modeling import disable_sparse_mlm_loss, enable_sparse_mlm_loss, load_masked_lm, load_tokenizer

MODEL = "builtin:splade-tiny"
TINY = {"vocab_size": 99, "max_position_embeddings": 40}


@pytest.fixture(scope="module")
def bert():
    return load_masked_lm(MODEL).eval()


def tiny_distilbert():
    config = DistilBertConfig(**TINY, dim=32, hidden_dim=37, n_layers=2, n_heads=2, pad_token_id=0)
    return DistilBertForMaskedLM(config).eval()


def tiny_roberta():
    # RoBERTa numbers positions from pad_token_id + 1, hence the two extra positions
    config = RobertaConfig(
        vocab_size=99,
        max_position_embeddings=42,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        pad_token_id=1,
    )
    return RobertaForMaskedLM(config).eval()


def make_batch(vocab_size: int, pad_id: int, batch: int = 4, length: int = 24, seed: int = 0) -> dict:
    """Random ids, ~15% labelled positions, and padding at the end of the last row."""
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, vocab_size, (batch, length), generator=gen)
    attention_mask = torch.ones_like(input_ids)
    input_ids[-1, -6:] = pad_id
    attention_mask[-1, -6:] = 0
    chosen = (torch.rand(input_ids.shape, generator=gen) < 0.15) & attention_mask.bool()
    chosen[0, 1] = True
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def stock_and_sparse(model):
    """Two independent copies of ``model``: stock and patched."""
    sparse = copy.deepcopy(model)
    assert enable_sparse_mlm_loss(sparse)
    return model, sparse


@pytest.fixture(params=["bert", "distilbert", "roberta"])
def case(request, bert):
    """(model, batch) for each supported architecture."""
    if request.param == "bert":
        model = copy.deepcopy(bert)
    else:
        model = tiny_distilbert() if request.param == "distilbert" else tiny_roberta()
    return model, make_batch(model.config.vocab_size, model.config.pad_token_id)


def test_loss_matches_stock(case):
    stock, sparse = stock_and_sparse(case[0])
    batch = case[1]
    with torch.no_grad():
        expected = stock(**batch).loss
        got = sparse(**batch)
    assert torch.allclose(got.loss, expected, rtol=1e-6, atol=1e-6)
    n_labelled = int((batch["labels"] != IGNORE_INDEX).sum())
    assert got.logits.shape == (n_labelled, stock.config.vocab_size)


def test_gradients_match_stock(case):
    stock, sparse = stock_and_sparse(case[0])
    batch = case[1]
    stock(**batch).loss.backward()
    sparse(**batch).loss.backward()
    stock_params = dict(stock.named_parameters())
    for name, param in sparse.named_parameters():
        expected = stock_params[name].grad
        if expected is None:
            assert param.grad is None or not param.grad.any(), name
            continue
        assert torch.allclose(param.grad, expected, rtol=1e-5, atol=1e-7), name


def test_num_items_in_batch_is_sum_over_num_items(case):
    """The Trainer passes num_items_in_batch for gradient accumulation: sum / num_items."""
    stock, sparse = stock_and_sparse(case[0])
    batch = case[1]
    n_labelled = int((batch["labels"] != IGNORE_INDEX).sum())
    with torch.no_grad():
        mean = stock(**batch).loss
        same = sparse(**batch, num_items_in_batch=n_labelled).loss
        spread = sparse(**batch, num_items_in_batch=3 * n_labelled).loss
    assert torch.allclose(same, mean, rtol=1e-6, atol=1e-6)
    assert torch.allclose(spread, mean / 3, rtol=1e-6, atol=1e-6)


def test_no_labelled_position_gives_finite_zero_loss(case):
    _, sparse = stock_and_sparse(case[0])
    batch = dict(case[1], labels=torch.full_like(case[1]["labels"], IGNORE_INDEX))
    loss = sparse(**batch).loss
    assert torch.isfinite(loss) and loss.item() == 0.0
    loss.backward()  # still part of the graph: a training step on it must not fail
    with_items = sparse(**batch, num_items_in_batch=4).loss
    assert torch.isfinite(with_items) and with_items.item() == 0.0


def test_without_labels_the_stock_forward_runs(bert):
    stock, sparse = stock_and_sparse(bert)
    batch = make_batch(bert.config.vocab_size, bert.config.pad_token_id)
    del batch["labels"]
    with torch.no_grad():
        expected = stock(**batch).logits
        got = sparse(**batch).logits
    assert got.shape == expected.shape == (*batch["input_ids"].shape, bert.config.vocab_size)
    assert torch.equal(got, expected)


def test_fill_mask_pipeline_works_on_a_patched_model(bert):
    from transformers import pipeline

    tokenizer = load_tokenizer(MODEL)
    stock, sparse = stock_and_sparse(bert)
    text = f"This is a great {tokenizer.mask_token}."
    predict = [pipeline("fill-mask", model=m, tokenizer=tokenizer, device=-1)(text, top_k=3) for m in (stock, sparse)]
    assert [p["token"] for p in predict[1]] == [p["token"] for p in predict[0]]


def test_disable_restores_the_stock_forward(bert):
    _, sparse = stock_and_sparse(bert)
    disable_sparse_mlm_loss(sparse)
    assert "forward" not in vars(sparse)


def test_unknown_architecture_is_left_unpatched():
    config = AlbertConfig(
        **TINY, embedding_size=16, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37
    )
    model = AlbertForMaskedLM(config)
    assert enable_sparse_mlm_loss(model) is False
    assert "forward" not in vars(model)
