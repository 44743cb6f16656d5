"""evaluate-clm on a tiny random GPT-2 with a byte-level BPE tokenizer: kfnlp's perplexity is exp of the loss
the stock model computes over the whole held-out set, the samples are what transformers' text-generation
pipeline gives with the same seed, and bad input is one line."""

from __future__ import annotations

import math
import time
from pathlib import Path

import datasets
import pytest
import torch
from transformers import GPT2LMHeadModel

from kfnlp.artifacts import read_evaluation
from kfnlp.errors import ConfigError, InputError
from kfnlp.stages.evaluate_clm import METRICS, EvaluateClmConfig, evaluate_clm

ADJECTIVES = ["great", "dull", "moving", "silly", "brilliant", "slow", "funny", "tense"]
NOUNS = ["movie", "film", "plot", "cast", "script", "ending", "score", "director"]
CHUNK = 32


def sentences() -> list[str]:
    """A few hundred short movie-review-like lines, deterministic."""
    return [
        f"The {noun} was {adjective}, and the {other} felt {second} to me."
        for noun in NOUNS
        for adjective in ADJECTIVES
        for other, second in zip(NOUNS[::-1], ADJECTIVES[::3], strict=False)
    ]


def tiny_gpt2(path: Path, texts: list[str], vocab_size: int = 400, n_positions: int = 64, seed: int = 0) -> Path:
    """A random-init one-layer GPT-2 and a byte-level BPE tokenizer trained on ``texts``, saved as safetensors."""
    from transformers import GPT2Config

    from kfnlp.data.bpe import train_bpe

    tokenizer = train_bpe(texts, vocab_size=vocab_size, min_frequency=1, model_max_length=n_positions)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=32,
        n_layer=1,
        n_head=2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    assert (path / "model.safetensors").is_file()
    return path


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory) -> Path:
    return tiny_gpt2(tmp_path_factory.mktemp("gpt2") / "model", sentences())


@pytest.fixture(scope="module")
def clm_dataset(gpt2, tmp_path_factory) -> Path:
    """The sentences as a text file, preprocessed with the GPT-2's tokenizer into chunks of 32."""
    from kfnlp.stages.preprocess import PreprocessConfig, preprocess

    root = tmp_path_factory.mktemp("clm-data")
    (root / "reviews.txt").write_text("\n".join(sentences()) + "\n", encoding="utf-8")
    out = root / "dataset"
    preprocess(str(out), PreprocessConfig(source=str(root / "reviews.txt"), chunk_size=CHUNK, test_size=0.2), str(gpt2))
    return out


def test_data_has_several_test_chunks(clm_dataset):
    test = datasets.load_from_disk(str(clm_dataset / "data"))["test"]
    assert len(test) >= 8 and len(test[0]["input_ids"]) == CHUNK


def held_out(dataset: Path, max_chunks: int | None) -> torch.Tensor:
    test = datasets.load_from_disk(str(dataset / "data"))["test"].with_format("torch")
    ids = test[:]["input_ids"].long()
    return ids if max_chunks is None else ids[:max_chunks]


def stock_loss(model_dir: Path, ids: torch.Tensor) -> tuple[float, float]:
    """The stock model's loss over the whole set in one forward (labels = input ids), and the same mean
    computed independently from its logits with torch's cross-entropy over every next-token position."""
    model = GPT2LMHeadModel.from_pretrained(model_dir).eval()
    with torch.inference_mode():
        out = model(input_ids=ids, labels=ids)
    logits = out.logits[:, :-1].reshape(-1, out.logits.shape[-1]).float()
    by_hand = torch.nn.functional.cross_entropy(logits, ids[:, 1:].reshape(-1))
    return float(out.loss), float(by_hand)


@pytest.mark.parametrize("max_chunks, batch_size", [(None, 5), (7, 3), (7, 32)])
def test_perplexity_is_exp_of_the_stock_loss_over_the_whole_set(gpt2, clm_dataset, tmp_path, max_chunks, batch_size):
    ids = held_out(clm_dataset, max_chunks)
    loss, by_hand = stock_loss(gpt2, ids)
    assert loss == pytest.approx(by_hand, rel=1e-6)
    config = EvaluateClmConfig(max_chunks=max_chunks, batch_size=batch_size, prompts=["The movie"], max_new_tokens=5)
    result = evaluate_clm(str(gpt2), str(clm_dataset), str(tmp_path / "ev"), config, "base")
    m = result["metrics"]
    assert m["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)
    assert m["eval_loss"] == pytest.approx(loss, rel=1e-5)
    assert m["perplexity"] == pytest.approx(math.exp(m["eval_loss"]), rel=1e-12)
    assert set(METRICS) <= set(m)  # what a sweep may select on is written
    assert m["eval_chunks"] == len(ids) and m["tokens"] == len(ids) * (CHUNK - 1)
    stored = read_evaluation(str(tmp_path / "ev"))
    assert stored["metrics"] == m and stored["task"] == "clm" and stored["label"] == "base"
    report = (tmp_path / "ev" / "report.md").read_text()
    assert "Causal-LM evaluation: base" in report and "Generation samples" in report and "The movie" in report


def test_eval_set_fingerprint_names_the_chunks_scored(gpt2, clm_dataset, tmp_path):
    """max_chunks past the split's size scores the same chunks as all of them: the same eval set for the gate."""
    small = dict(prompts=[], batch_size=64)
    fingerprints = [
        evaluate_clm(str(gpt2), str(clm_dataset), str(tmp_path / f"ev{i}"), EvaluateClmConfig(**small, max_chunks=n))[
            "eval_set_fingerprint"
        ]
        for i, n in enumerate((None, 10_000, 3))
    ]
    assert fingerprints[0] == fingerprints[1] != fingerprints[2]


def test_deterministic_and_samples_are_the_text_generation_pipelines(gpt2, clm_dataset, tmp_path):
    from transformers import pipeline, set_seed

    config = EvaluateClmConfig(max_chunks=4, prompts=["The movie was", "The plot"], max_new_tokens=12, samples_seed=7)
    first = evaluate_clm(str(gpt2), str(clm_dataset), str(tmp_path / "a"), config)
    second = evaluate_clm(str(gpt2), str(clm_dataset), str(tmp_path / "b"), config)
    drop = ("eval_seconds", "eval_samples_per_second")
    assert {k: v for k, v in first["metrics"].items() if k not in drop} == {
        k: v for k, v in second["metrics"].items() if k not in drop
    }
    assert first["samples"] == second["samples"]
    assert [s["prompt"] for s in first["samples"]] == config.prompts

    generator = pipeline("text-generation", model=str(gpt2))
    for sample in first["samples"]:
        greedy = generator(sample["prompt"], max_new_tokens=12, do_sample=False, return_full_text=False)
        set_seed(7)
        sampled = generator(
            sample["prompt"], max_new_tokens=12, do_sample=True, top_k=50, temperature=1.0, return_full_text=False
        )
        assert sample["greedy"] == greedy[0]["generated_text"]
        assert sample["sampled"] == sampled[0]["generated_text"]

    other = evaluate_clm(
        str(gpt2), str(clm_dataset), str(tmp_path / "c"), EvaluateClmConfig(**{**vars(config), "samples_seed": 8})
    )
    assert [s["greedy"] for s in other["samples"]] == [s["greedy"] for s in first["samples"]]
    assert [s["sampled"] for s in other["samples"]] != [s["sampled"] for s in first["samples"]]


def test_refuses_a_masked_lm(clm_dataset, tmp_path):
    with pytest.raises(ConfigError, match=r"is a BertForMaskedLM \(a masked-LM\), not a causal LM") as err:
        evaluate_clm("builtin:splade-tiny", str(clm_dataset), str(tmp_path / "ev"), EvaluateClmConfig())
    assert "\n" not in str(err.value)
    assert not (tmp_path / "ev").exists()


def test_refuses_a_split_the_dataset_lacks(gpt2, clm_dataset, tmp_path):
    with pytest.raises(InputError, match=r"no validation split \(has train, test\)$"):
        evaluate_clm(str(gpt2), str(clm_dataset), str(tmp_path / "ev"), EvaluateClmConfig(split="validation"))
    assert not (tmp_path / "ev").exists()


def write_chunks(path: Path, model_dir: Path, test_rows: int, task: str = "mlm") -> str:
    """A dataset artifact with a train split of one chunk and a test split of ``test_rows``, and preprocess's
    counts, as the writer writes it (datasets 5.2 saves an empty split as no shard, which it cannot load)."""
    from kfnlp.artifacts import tokenizer_fingerprint, write_dataset
    from kfnlp.modeling import load_tokenizer

    tokenizer = load_tokenizer(str(model_dir))
    row = {"input_ids": [[5] * CHUNK], "attention_mask": [[1] * CHUNK]}
    splits = {
        "train": datasets.Dataset.from_dict(row),
        "test": datasets.Dataset.from_dict({k: v * test_rows for k, v in row.items()}),
    }
    write_dataset(
        str(path),
        splits,
        tokenizer,
        time.monotonic(),
        task=task,
        counts={"train": {"chunks": 1}, "test": {"chunks": test_rows}},
        fingerprint="f" * 64,
        tokenizer_fingerprint=tokenizer_fingerprint(tokenizer),
    )
    return str(path)


def test_refuses_an_empty_split(gpt2, tmp_path):
    dataset = write_chunks(tmp_path / "data", gpt2, test_rows=0)
    with pytest.raises(InputError, match=r"the test split has no chunks to score$"):
        evaluate_clm(str(gpt2), dataset, str(tmp_path / "ev"), EvaluateClmConfig())
    assert not (tmp_path / "ev").exists()


def test_refuses_a_labelled_dataset(gpt2, tmp_path):
    dataset = write_chunks(tmp_path / "data", gpt2, test_rows=2, task="cls")
    with pytest.raises(InputError, match=r"a cls dataset, not chunked text; run preprocess on the corpus$"):
        evaluate_clm(str(gpt2), dataset, str(tmp_path / "ev"), EvaluateClmConfig())


def test_refuses_another_vocabulary_and_chunks_past_the_context(gpt2, clm_dataset, tmp_path):
    other = tiny_gpt2(tmp_path / "other", [s.upper() for s in sentences()], vocab_size=350)
    with pytest.raises(InputError, match="different vocabulary"):
        evaluate_clm(str(other), str(clm_dataset), str(tmp_path / "ev"), EvaluateClmConfig())
    short = tmp_path / "short"
    model = GPT2LMHeadModel.from_pretrained(gpt2)
    model.config.n_positions = 16  # the same tokenizer, a context shorter than the chunks
    GPT2LMHeadModel(model.config).save_pretrained(short)
    (short / "tokenizer.json").write_bytes((gpt2 / "tokenizer.json").read_bytes())
    (short / "tokenizer_config.json").write_bytes((gpt2 / "tokenizer_config.json").read_bytes())
    with pytest.raises(InputError, match=rf"chunks of {CHUNK} tokens are longer than .*context of 16; preprocess"):
        evaluate_clm(str(short), str(clm_dataset), str(tmp_path / "ev"), EvaluateClmConfig())
    assert not (tmp_path / "ev").exists()


def test_refuses_a_prompt_longer_than_the_context(gpt2, clm_dataset, tmp_path):
    config = EvaluateClmConfig(max_chunks=2, prompts=["The movie was great. " * 20], max_new_tokens=10)
    with pytest.raises(ConfigError, match=r"evaluate_clm.prompts\[0\]: \d+ tokens \+ max_new_tokens 10 is more") as e:
        evaluate_clm(str(gpt2), str(clm_dataset), str(tmp_path / "ev"), config)
    assert e.value.key == "evaluate_clm.prompts"
    assert not (tmp_path / "ev").exists()


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"max_chunks": 0}, "max_chunks: expected an integer >= 1"),
        ({"batch_size": 0}, "batch_size: expected an integer >= 1"),
        ({"max_new_tokens": 0}, "max_new_tokens: expected an integer >= 1"),
        ({"prompts": ["ok", "  "]}, "prompts: prompt 1 is empty"),
        ({"samples_seed": -1}, "samples_seed: expected an integer from 0"),
    ],
)
def test_config_refuses_bad_values(fields, message):
    with pytest.raises(ConfigError, match=message):
        EvaluateClmConfig(**fields)


def test_run_report_shows_clm_perplexity_before_and_after_and_the_samples(gpt2, clm_dataset, tmp_path):
    """The run's summary and report.md read two clm evaluations (base, adapted) as they read mlm ones."""
    from kfnlp.launch.summary import results
    from kfnlp.reports import run_report

    config = EvaluateClmConfig(max_chunks=4, prompts=["The plot"], max_new_tokens=6)
    for label in ("base", "adapted"):
        evaluate_clm(str(gpt2), str(clm_dataset), str(tmp_path / label), config, label)
    stages = [
        {"name": f"evaluate-clm-{label}", "status": "succeeded", "outputs": {"results": str(tmp_path / label)}}
        for label in ("base", "adapted")
    ]
    metrics, artifacts = results(stages)
    assert metrics["perplexity_before"] == metrics["base"]["perplexity"]
    assert metrics["perplexity_after"] == metrics["adapted"]["perplexity"]
    summary = {
        "pipeline": "clm-adapt",
        "run": "r1",
        "status": "succeeded",
        "wall_time_s": 1.0,
        "metrics": metrics,
        "artifacts": {**artifacts, "model": str(gpt2)},
        "stages": stages,
        "log": "pipeline.log",
    }
    report = run_report(summary)
    assert "Perplexity on the held-out chunks (next-token prediction) did not fall" in report  # the same model
    assert "predicted tokens" in report and "masked" not in report
    assert "## Generation samples: base" in report and "## Generation samples: adapted" in report
    assert f'kfnlp predict generate --model {gpt2} "This movie was"' in report


def test_kfnlp_stage_evaluate_clm(gpt2, clm_dataset, tmp_path):
    """The command runs the stage; a masked LM is refused in one line, and nothing is written."""
    import json

    from tests.support.cli import MODEL, run_cli

    out = tmp_path / "ev"
    args = ("stage", "evaluate-clm", "--dataset", str(clm_dataset), "--output", str(out))
    refused = run_cli(*args, "--model", MODEL)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    lines = [line for line in refused.stderr.splitlines() if "error" in line.lower()]
    assert lines == [refused.stderr.strip().splitlines()[-1]]
    assert lines[0].startswith("kfnlp: error: ") and "not a causal LM" in lines[0]
    assert not out.exists()
    done = run_cli(*args, "--model", str(gpt2), "--label", "base", "--set", "max_chunks=3", "--set", "max_new_tokens=4")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["label"] == "base" and result["metrics"]["eval_chunks"] == 3
    assert read_evaluation(str(out))["samples"] == result["samples"]


def test_scores_a_lora_adapter_as_the_merged_model(gpt2, clm_dataset, tmp_path):
    """An adapter directory (peft's files and the tokenizer) is scored on its base: the perplexity of the
    merged model's stock forward, not the base's."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], init_lora_weights=False)  # non-zero: not a no-op
    adapted = get_peft_model(GPT2LMHeadModel.from_pretrained(gpt2), lora)
    adapter = tmp_path / "adapter"
    adapted.save_pretrained(adapter)
    (adapter / "tokenizer.json").write_bytes((gpt2 / "tokenizer.json").read_bytes())
    (adapter / "tokenizer_config.json").write_bytes((gpt2 / "tokenizer_config.json").read_bytes())
    merged = tmp_path / "merged"
    adapted.merge_and_unload().save_pretrained(merged)

    ids = held_out(clm_dataset, 6)
    config = EvaluateClmConfig(max_chunks=6, batch_size=4, prompts=[])
    result = evaluate_clm(str(adapter), str(clm_dataset), str(tmp_path / "ev"), config, "adapted")
    assert result["metrics"]["perplexity"] == pytest.approx(math.exp(stock_loss(merged, ids)[0]), rel=1e-5)
    assert result["metrics"]["perplexity"] != pytest.approx(math.exp(stock_loss(gpt2, ids)[0]), rel=1e-3)


def test_evaluation_page_plots_the_perplexity_and_lists_the_samples(gpt2, clm_dataset, tmp_path):
    from html import escape

    from tests.support.html_page import check_self_contained, read_page

    config = EvaluateClmConfig(max_chunks=4, prompts=["The movie was"], max_new_tokens=5)
    result = evaluate_clm(str(gpt2), str(clm_dataset), str(tmp_path / "ev"), config, "adapted")
    html = (tmp_path / "ev" / "report.html").read_text(encoding="utf-8")
    page = read_page(html)
    check_self_contained(page)
    assert page.headings == ["Causal-LM evaluation: adapted", "Generation samples"]
    assert page.plots == ["Causal-LM perplexity: adapted"] and page.elements("perplexity") == 1
    sample = result["samples"][0]
    assert escape(sample["greedy"]) in html and escape(sample["sampled"]) in html
