"""train-clm: real (tiny) Trainer runs of a GPT-2 and its BPE tokenizer built here; outputs plain transformers
loads; LoRA adapters saved as adapters, loaded onto their base and merged; the bad-input lines."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import pipeline

from kfnlp.errors import ConfigError, InputError
from kfnlp.modeling import export_model, load_causal_lm, load_tokenizer, merge_adapter
from kfnlp.stages.train_clm import CausalCollator, TrainClmConfig, train_clm
from kfnlp.storage import read_manifest

SUBJECTS = ["the movie", "this film", "the actor", "the story", "the director", "the music", "the ending"]
VERBS = ["was", "seemed", "felt", "looked", "became"]
ADJECTIVES = ["great", "boring", "wonderful", "terrible", "funny", "slow", "beautiful", "long"]
CHUNK = 32


def sentences(n: int = 400, seed: int = 0) -> list[str]:
    """Short review-like lines of a small grammar: a tiny model learns them in a few steps."""
    rng = random.Random(seed)

    def clause() -> str:
        return f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(ADJECTIVES)}"

    return [f"{clause().capitalize()} and {clause()}." for _ in range(n)]


def tiny_gpt2(directory: Path, tokenizer, **shape) -> Path:
    """A random tiny GPT-2 (no dropout: runs compare exactly) saved with ``tokenizer``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    eos = tokenizer.eos_token_id
    config = GPT2Config(
        **{"n_layer": 1, "n_head": 2, "n_embd": 32, "n_positions": 64, **shape},
        vocab_size=len(tokenizer),
        bos_token_id=eos,
        eos_token_id=eos,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def clm(tmp_path_factory) -> dict[str, Path]:
    """base: a tiny GPT-2 with a byte-level BPE tokenizer trained on the corpus; dataset: that corpus
    preprocessed with it into chunks of 32 tokens (each line a document ending in <|endoftext|>)."""
    from kfnlp.data.bpe import train_bpe
    from kfnlp.stages.preprocess import PreprocessConfig, preprocess

    root = tmp_path_factory.mktemp("clm")
    lines = sentences()
    (root / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    tokenizer = train_bpe(lines, vocab_size=300, min_frequency=1, model_max_length=64)
    base = tiny_gpt2(root / "base", tokenizer)
    dataset = root / "dataset"
    config = PreprocessConfig(source=str(root / "corpus.txt"), chunk_size=CHUNK, test_size=0.2)
    preprocess(str(dataset), config, tokenizer=str(base))
    return {"root": root, "base": base, "dataset": dataset}


def quick(**overrides) -> TrainClmConfig:
    settings = {
        "learning_rate": 5e-3,
        "batch_size": 8,
        "max_steps": 4,
        "warmup_ratio": 0.0,
        "logging_steps": 1,
        "save_steps": 1000,
        "optim": "adamw_torch",
        **overrides,
    }
    return TrainClmConfig(**settings)


def held_out_loss(model, dataset: Path, rows: int = 16) -> float:
    """The stock model's own mean loss (labels = input ids) on the first test chunks."""
    from kfnlp.artifacts import open_dataset

    test = open_dataset(str(dataset)).splits()["test"].select(range(rows))
    ids = torch.tensor(test["input_ids"])
    with torch.no_grad():
        return model(input_ids=ids, labels=ids).loss.item()


def logits(model, rows: int = 2) -> torch.Tensor:
    ids = torch.arange(1, 1 + rows * 8).reshape(rows, 8) % 200 + 1
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_trains_loss_falls_and_loads_with_plain_pipeline(clm, tmp_path):
    out = tmp_path / "model"
    manifest = train_clm(str(clm["dataset"]), str(out), quick(max_steps=12), str(clm["base"]))
    training = manifest["training"]
    assert training["global_step"] == 12 and training["trainable_parameters"] == training["parameters"]
    assert manifest["task"] == "clm" and manifest["base_model"] == str(clm["base"])
    assert "adapter_base" not in manifest and manifest["from_scratch"] is False
    files = {p.name for p in out.iterdir()}
    assert "model.safetensors" in files and not any(name.endswith(".bin") for name in files)
    assert read_manifest(out, kind="model")["dataset_fingerprint"] == manifest["dataset_fingerprint"]
    before = held_out_loss(load_causal_lm(str(clm["base"])), clm["dataset"])
    after = held_out_loss(load_causal_lm(str(out)), clm["dataset"])
    assert after < before - 0.5, (before, after)
    generator = pipeline("text-generation", model=str(out))
    (generated,) = generator("The movie", max_new_tokens=5, do_sample=False)
    assert generated["generated_text"].startswith("The movie") and len(generated["generated_text"]) > len("The movie")
    assert json.loads((out / "config.json").read_text())["pad_token_id"] == generator.tokenizer.eos_token_id


def test_collator_labels_every_predicted_position_and_no_padding():
    """Labels are the inputs (the loss shifts them); -100 where nothing is predicted: row starts and padding,
    padding found by the attention mask (the pad id is the eos id, a real target)."""
    eos = 0
    rows = [
        {"input_ids": [5, 6, eos, 7], "attention_mask": [1, 1, 1, 1]},
        {"input_ids": [8, 9], "attention_mask": [1, 1]},
    ]
    batch = CausalCollator(pad_token_id=eos)(rows)
    assert batch["input_ids"].tolist() == [[5, 6, eos, 7], [8, 9, eos, eos]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, eos, 7], [-100, 9, -100, -100]]


def test_causal_loss_is_the_stock_models_loss(clm):
    """causal_token_loss (what train-clm trains on) gives the stock forward's loss on the same batch."""
    from kfnlp.modeling import causal_token_loss

    model = load_causal_lm(str(clm["base"]))
    rows = [{"input_ids": list(range(10, 30))}, {"input_ids": list(range(40, 52))}]
    batch = CausalCollator(pad_token_id=0)(rows)
    with torch.no_grad():
        stock = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    ours = causal_token_loss(stock, batch["labels"])
    assert ours.item() == pytest.approx(stock.loss.item(), rel=1e-6)


def test_gradient_accumulation_gives_the_step_of_one_large_batch(clm, tmp_path):
    """batch 4 x 2 accumulated batches == batch 8: the loss of an accumulated step is the mean over all its
    predicted tokens. AdamW and gradient clipping hide a constant factor in the gradient, so the step's logged
    loss and gradient norm (before clipping) are compared as well as the weights."""
    common = {"max_steps": 2, "max_train_chunks": 32, "learning_rate": 1e-3, "save_steps": 1, "keep_checkpoints": True}
    runs = {
        "one": quick(batch_size=8, **common),
        "two": quick(batch_size=4, gradient_accumulation_steps=2, **common),
    }
    history = {}
    for name, config in runs.items():
        config.checkpoint_dir = str(tmp_path / f"{name}-checkpoints")
        manifest = train_clm(str(clm["dataset"]), str(tmp_path / name), config, str(clm["base"]))
        assert manifest["training"]["global_batch_size"] == 8
        (state,) = (tmp_path / f"{name}-checkpoints").glob("*/step-000000001/trainer_state.json")
        history[name] = json.loads(state.read_text())["log_history"][0]  # step 1: loss, grad_norm
    assert history["two"]["loss"] == pytest.approx(history["one"]["loss"], rel=1e-5)
    assert history["two"]["grad_norm"] == pytest.approx(history["one"]["grad_norm"], rel=1e-5)
    a, b = (load_file(tmp_path / name / "model.safetensors") for name in runs)
    base = load_file(clm["base"] / "model.safetensors")
    assert any(not torch.equal(a[key], base[key]) for key in a)  # it trained
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6, rtol=0), (key, (a[key] - b[key]).abs().max())


def test_resumes_from_its_checkpoint(clm, tmp_path):
    config = quick(max_steps=2, save_steps=1, keep_checkpoints=True, max_train_chunks=32)
    first = train_clm(str(clm["dataset"]), str(tmp_path / "model"), config, str(clm["base"]))
    assert first["training"]["resumed_from_step"] is None
    second = train_clm(str(clm["dataset"]), str(tmp_path / "model"), config, str(clm["base"]))
    assert second["training"]["resumed_from_step"] >= 1 and second["training"]["global_step"] == 2


def test_from_scratch_builds_a_gpt2_of_the_tokenizer_and_chunk_size(clm, tmp_path):
    out = tmp_path / "scratch"
    config = quick(from_scratch=True, scratch_layers=1, scratch_heads=2, scratch_hidden=16, max_steps=2)
    manifest = train_clm(str(clm["dataset"]), str(out), config, str(clm["base"]))
    assert manifest["from_scratch"] is True
    saved = json.loads((out / "config.json").read_text())
    tokenizer = load_tokenizer(str(clm["base"]))
    assert saved["architectures"] == ["GPT2LMHeadModel"]
    assert (saved["n_positions"], saved["n_layer"], saved["n_head"], saved["n_embd"]) == (CHUNK, 1, 2, 16)
    assert saved["vocab_size"] == len(tokenizer) and saved["eos_token_id"] == tokenizer.eos_token_id
    # seeded: the same config gives the same model
    again = train_clm(str(clm["dataset"]), str(tmp_path / "again"), config, str(clm["base"]))
    assert again["training"]["train_loss"] == pytest.approx(manifest["training"]["train_loss"], rel=1e-6)
    pipeline("text-generation", model=str(out))("The", max_new_tokens=3, do_sample=False)


def test_lora_saves_an_adapter_that_loads_onto_its_base_and_merges(clm, tmp_path):
    out = tmp_path / "lora"
    config = quick(lora=True, lora_r=4, learning_rate=5e-2, max_steps=3, lora_target_modules=["c_attn", "c_fc"])
    manifest = train_clm(str(clm["dataset"]), str(out), config, str(clm["base"]))
    files = {p.name for p in out.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= files
    assert "model.safetensors" not in files and "README.md" not in files  # no peft template card
    assert manifest["adapter_base"] == str(clm["base"])
    assert manifest["lora"] == {
        "r": 4,
        "alpha": 16,
        "dropout": 0.05,
        "target_modules": ["c_attn", "c_fc"],
        "merged": False,
    }
    training = manifest["training"]
    assert 0 < training["trainable_parameters"] < training["parameters"] // 2

    adapted = load_causal_lm(str(out))
    assert type(adapted).__name__ == "PeftModelForCausalLM"
    base = load_causal_lm(str(clm["base"]))
    assert not torch.allclose(logits(adapted), logits(base), atol=1e-4)  # the adapter learned something
    expected = logits(adapted)
    assert torch.allclose(logits(merge_adapter(adapted)), expected, atol=1e-5)

    # plain transformers loads it too (its peft integration reads adapter_config.json)
    generator = pipeline("text-generation", model=str(out))
    assert torch.allclose(logits(generator.model), expected, atol=1e-5)

    merged = tmp_path / "merged"
    assert export_model(str(out), str(merged), merge=True)["merged"] is True
    files = {p.name for p in merged.iterdir()}
    assert "model.safetensors" in files and "adapter_config.json" not in files
    exported = read_manifest(merged, kind="model")
    assert "adapter_base" not in exported and exported["merged_adapter_base"] == str(clm["base"])
    plain = pipeline("text-generation", model=str(merged))
    assert type(plain.model).__name__ == "GPT2LMHeadModel"
    assert torch.allclose(logits(plain.model), expected, atol=1e-5)
    with pytest.raises(ConfigError, match="not an empty directory"):
        export_model(str(out), str(merged), merge=True)

    # an adapter as the base of another: trained on the first one's merge, loaded through both
    stacked = tmp_path / "stacked"
    manifest = train_clm(str(clm["dataset"]), str(stacked), quick(lora=True, max_steps=1), str(out))
    assert manifest["adapter_base"] == str(out)
    assert type(load_causal_lm(str(stacked))).__name__ == "PeftModelForCausalLM"


def test_lora_merge_saves_a_plain_model(clm, tmp_path):
    out = tmp_path / "merged"
    manifest = train_clm(
        str(clm["dataset"]), str(out), quick(lora=True, lora_merge=True, max_steps=1), str(clm["base"])
    )
    files = {p.name for p in out.iterdir()}
    assert "model.safetensors" in files and "adapter_config.json" not in files
    assert "adapter_base" not in manifest and manifest["lora"]["merged"] is True
    assert manifest["lora"]["target_modules"] == ["c_attn"]  # peft's default for GPT-2
    assert type(load_causal_lm(str(out))).__name__ == "GPT2LMHeadModel"


def test_refuses_a_model_without_a_causal_lm_head(clm, tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    tokenizer = load_tokenizer(str(clm["base"]))
    bert = tmp_path / "bert"
    shape = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    BertForMaskedLM(shape).save_pretrained(bert)
    tokenizer.save_pretrained(bert)
    message = r"is a BertForMaskedLM \(a masked-LM\), not a causal LM; use a decoder model"
    with pytest.raises(ConfigError, match=message):
        train_clm(str(clm["dataset"]), str(tmp_path / "out"), quick(), str(bert))
    with pytest.raises(ConfigError, match=message):
        load_causal_lm("builtin:splade-tiny")
    assert not (tmp_path / "out").exists()


def test_refuses_a_tokenizer_without_an_end_of_text_token(clm, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(clm["base"]))
    tokenizer.eos_token = None
    tokenizer.bos_token = None
    no_eos = tiny_gpt2(tmp_path / "no-eos", tokenizer)
    assert load_tokenizer(str(no_eos)).eos_token is None
    with pytest.raises(ConfigError, match="has no end-of-text token"):
        train_clm(str(clm["dataset"]), str(tmp_path / "out"), quick(), str(no_eos))


def test_a_tokenizer_without_padding_pads_with_its_end_of_text_token(clm):
    from kfnlp.modeling import check_causal_tokenizer

    tokenizer = load_tokenizer(str(clm["base"]))
    tokenizer.pad_token = None
    assert check_causal_tokenizer(tokenizer, "t").pad_token == tokenizer.eos_token == "<|endoftext|>"


@pytest.mark.parametrize("targets", [["q_proj"], ["c_attn", "nope"]])
def test_refuses_lora_target_modules_that_name_no_module(clm, tmp_path, targets):
    config = quick(lora=True, lora_target_modules=targets)
    with pytest.raises(ConfigError, match=rf"lora_target_modules: '{targets[-1]}' names no module") as caught:
        train_clm(str(clm["dataset"]), str(tmp_path / "out"), config, str(clm["base"]))
    assert "its linear layers: c_attn, c_proj, c_fc" in str(caught.value)
    assert caught.value.key == "train_clm.lora_target_modules"


def test_refuses_chunks_longer_than_the_models_positions(clm, tmp_path):
    short = tiny_gpt2(tmp_path / "short", load_tokenizer(str(clm["base"])), n_positions=CHUNK // 2)
    with pytest.raises(InputError, match=f"chunks of {CHUNK} tokens are longer than .* {CHUNK // 2} positions"):
        train_clm(str(clm["dataset"]), str(tmp_path / "out"), quick(), str(short))


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"lora": True, "from_scratch": True}, "set only one"),
        ({"lora_merge": True}, "needs lora: true"),
        ({"scratch_hidden": 30, "scratch_heads": 4}, "must divide scratch_hidden"),
        ({"lora_target_modules": []}, "at least one module"),
        ({"lora_dropout": 1.0}, "lora_dropout"),
    ],
)
def test_config_refuses_contradictions(settings, message):
    with pytest.raises(ValueError, match=message):
        TrainClmConfig(**settings)
