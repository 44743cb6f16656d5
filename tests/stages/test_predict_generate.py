"""kfnlp predict generate on a tiny random GPT-2 with a byte-level BPE tokenizer trained here: the text equals
transformers' own generate and text-generation pipeline, seeded sampling reproduces, streaming prints the same
text, chat goes through the tokenizer's chat template, and bad input is one line."""

from __future__ import annotations

import csv
import itertools
import json
import shutil
from pathlib import Path

import pytest

from kfnlp import cli
from kfnlp.assets import builtin_data_file
from tests.support.cli import MODEL, run_cli

EOT = "<|endoftext|>"
POSITIONS = 64
PROMPTS = ["This movie was", "The acting in this film"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|> {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(autouse=True)
def no_progress_bars(monkeypatch):
    """transformers' weight-loading bar off, as ``kfnlp predict`` turns it off in its own process (transformers,
    already imported here, read HF_HUB_DISABLE_PROGRESS_BARS on import)."""
    from transformers.utils import logging

    monkeypatch.setattr(logging, "_tqdm_active", False)


def _reviews(count: int) -> list[str]:
    with open(builtin_data_file("imdb"), encoding="utf-8", newline="") as file:
        return [row["text"] for row in itertools.islice(csv.DictReader(file), count)]


def _bpe(texts: list[str], *, eos: bool = True):
    """A GPT-2-style byte-level BPE tokenizer trained on ``texts`` (a second), as transformers wraps it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=[EOT], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(texts, trainer)
    special = {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT} if eos else {"unk_token": EOT}
    return PreTrainedTokenizerFast(tokenizer_object=tok, **special)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> Path:
    """A tiny random GPT-2 (1 layer, 64 positions) and its BPE tokenizer, saved as a plain model directory."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = _bpe(_reviews(300))
    config = GPT2Config(
        n_layer=1,
        n_head=2,
        n_embd=32,
        n_positions=POSITIONS,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("gpt2") / "model"
    GPT2LMHeadModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def chat_dir(gpt2_dir, tmp_path_factory) -> Path:
    """The same model with a chat template set on its tokenizer."""
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("gpt2-chat") / "model"
    shutil.copytree(gpt2_dir, out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out)
    return out


def _stock(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def _reference(path: Path, prompt_ids: list[int], seed: int = 42, **kwargs) -> list[int]:
    """The new token ids of plain ``model.generate`` on the stock model."""
    import torch
    from transformers import set_seed

    model, tokenizer = _stock(path)
    ids = torch.tensor([prompt_ids])
    set_seed(seed)
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), pad_token_id=tokenizer.eos_token_id, **kwargs)
    return out[0, len(prompt_ids) :].tolist()


def _json(capsys, *args: str) -> list[dict]:
    capsys.readouterr()
    assert cli.main(["predict", "generate", *args]) == 0
    return json.loads(capsys.readouterr().out)


def _text(capsys, *args: str) -> str:
    capsys.readouterr()
    assert cli.main(["predict", "generate", *args]) == 0
    return capsys.readouterr().out


def test_greedy_equals_model_generate_and_the_text_generation_pipeline(gpt2_dir, capsys):
    from transformers import pipeline

    results = _json(capsys, "--model", str(gpt2_dir), "--max-new-tokens", "12", "--json", *PROMPTS)
    assert [r["prompt"] for r in results] == PROMPTS
    _, tokenizer = _stock(gpt2_dir)
    plain = pipeline("text-generation", model=str(gpt2_dir))  # the directory loads with plain transformers
    for result in results:
        new = _reference(gpt2_dir, tokenizer(result["prompt"])["input_ids"], max_new_tokens=12, do_sample=False)
        assert result["completion"] == tokenizer.decode(new, skip_special_tokens=True) != ""
        assert result["tokens"] == len(new) and result["stopped"] == (
            "eos" if new[-1] == tokenizer.eos_token_id else "max_new_tokens"
        )
        [piped] = plain(result["prompt"], max_new_tokens=12, do_sample=False, return_full_text=False)
        assert piped["generated_text"] == result["completion"]
    text = _text(capsys, "--model", str(gpt2_dir), "--max-new-tokens", "12", *PROMPTS)
    assert text == "\n\n".join(r["prompt"] + r["completion"] for r in results) + "\n"


def test_beam_search_and_penalties_equal_model_generate(gpt2_dir, capsys):
    options = {"num_beams": 3, "repetition_penalty": 1.3, "no_repeat_ngram_size": 2}
    flags = ["--num-beams", "3", "--repetition-penalty", "1.3", "--no-repeat-ngram-size", "2"]
    [result] = _json(capsys, "--model", str(gpt2_dir), "--max-new-tokens", "10", *flags, "--json", PROMPTS[0])
    _, tokenizer = _stock(gpt2_dir)
    new = _reference(gpt2_dir, tokenizer(PROMPTS[0])["input_ids"], max_new_tokens=10, do_sample=False, **options)
    assert result["completion"] == tokenizer.decode(new, skip_special_tokens=True)
    greedy = _reference(gpt2_dir, tokenizer(PROMPTS[0])["input_ids"], max_new_tokens=10, do_sample=False)
    assert new != greedy  # the options changed the decoding, so the comparison above tests them


def test_seeded_sampling_reproduces_across_processes(gpt2_dir, capsys):
    sampling = ["--do-sample", "--temperature", "0.9", "--top-k", "40", "--top-p", "0.95"]
    args = ["predict", "generate", "--model", str(gpt2_dir), "--max-new-tokens", "15", *sampling, "--json"]
    first = run_cli(*args, "--seed", "7", *PROMPTS)
    assert first.returncode == 0, first.stderr
    again = _json(capsys, *args[2:], "--seed", "7", *PROMPTS)
    assert json.loads(first.stdout) == again
    other = _json(capsys, *args[2:], "--seed", "8", *PROMPTS)
    assert [r["completion"] for r in other] != [r["completion"] for r in again]
    _, tokenizer = _stock(gpt2_dir)
    options = {"do_sample": True, "temperature": 0.9, "top_k": 40, "top_p": 0.95, "max_new_tokens": 15}
    for result in again:  # the seed is set before each prompt: each is what a run of that prompt alone gives
        new = _reference(gpt2_dir, tokenizer(result["prompt"])["input_ids"], seed=7, **options)
        assert result["completion"] == tokenizer.decode(new, skip_special_tokens=True)


@pytest.mark.parametrize("decoding", [[], ["--do-sample", "--seed", "3"]], ids=["greedy", "sampled"])
def test_streaming_prints_the_same_text(gpt2_dir, chat_dir, capsys, decoding):
    for model, chat in ((gpt2_dir, []), (chat_dir, ["--chat"])):
        args = ["--model", str(model), "--max-new-tokens", "20", *decoding, *chat, *PROMPTS]
        assert _text(capsys, "--stream", *args) == _text(capsys, *args)


def test_streaming_hands_over_pieces_as_they_come(gpt2_dir):
    from kfnlp.predict import Decoding, generate

    pieces: list[tuple[int, str]] = []
    results = generate(
        str(gpt2_dir), PROMPTS, Decoding(max_new_tokens=20), on_text=lambda i, piece: pieces.append((i, piece))
    )
    for index, result in enumerate(results):
        mine = [piece for i, piece in pieces if i == index]
        assert mine[0] == "" and len(mine) > 2  # the start, then several pieces, not the whole text at the end
        assert "".join(mine) == result["completion"]


def test_generation_stops_at_end_of_text_even_without_it_in_the_generation_config(gpt2_dir, tmp_path):
    """A model made to always predict <|endoftext|> (the final layer norm gives a constant vector, which
    end-of-text's tied embedding is aligned with), its generation_config.json naming no eos: it stops there."""
    import torch
    from transformers import GPT2LMHeadModel

    from kfnlp.predict import Decoding, generate

    model = GPT2LMHeadModel.from_pretrained(gpt2_dir)
    eos = model.config.eos_token_id
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(torch.linspace(-1, 1, model.config.n_embd))
        model.transformer.wte.weight[eos] = 100 * model.transformer.ln_f.bias
    model.generation_config.eos_token_id = model.config.eos_token_id = None
    model.save_pretrained(tmp_path / "model")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(gpt2_dir / name, tmp_path / "model" / name)
    [result] = generate(str(tmp_path / "model"), [PROMPTS[0]], Decoding(max_new_tokens=8))
    assert result == {"prompt": PROMPTS[0], "completion": "", "tokens": 1, "stopped": "eos"}
    [result] = generate(str(gpt2_dir), [PROMPTS[0]], Decoding(max_new_tokens=8))
    assert result["tokens"] == 8 and result["stopped"] == "max_new_tokens"


def test_chat_goes_through_the_chat_template(chat_dir, capsys):
    [result] = _json(capsys, "--model", str(chat_dir), "--chat", "--max-new-tokens", "10", "--json", PROMPTS[0])
    _, tokenizer = _stock(chat_dir)
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPTS[0]}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == f"<|user|> {PROMPTS[0]}\n<|assistant|>"
    new = _reference(chat_dir, tokenizer(rendered)["input_ids"], max_new_tokens=10, do_sample=False)
    assert result["completion"] == tokenizer.decode(new, skip_special_tokens=True)
    plain = _json(capsys, "--model", str(chat_dir), "--max-new-tokens", "10", "--json", PROMPTS[0])
    assert plain[0]["completion"] != result["completion"]  # --chat changed what the model saw


def test_help_explains_each_option_and_its_default(capsys):
    with pytest.raises(SystemExit):
        cli.main(["predict", "generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--max-new-tokens", "--num-beams", "--do-sample", "--temperature", "--top-k", "--top-p"):
        assert option in text
    for option in ("--repetition-penalty", "--no-repeat-ngram-size", "--seed", "--stream", "--chat", "--json"):
        assert option in text
    assert "(default: 50)" in text and "(default: 42)" in text and "else 1.0)" in text and "else 50)" in text
    with pytest.raises(SystemExit):
        cli.main(["predict", "--help"])
    assert "generate" in capsys.readouterr().out


def _one_line(capsys, *args: str) -> str:
    capsys.readouterr()
    assert cli.main(["predict", "generate", *args]) != 0
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kfnlp: error: "), captured.err
    assert captured.out == ""
    return lines[0]


BAD_NUMBERS = [
    (["--temperature", "0", "--do-sample"], "--temperature: expected a number > 0, got 0.0"),
    (["--temperature", "-1", "--do-sample"], "--temperature: expected a number > 0, got -1.0"),
    (["--temperature", "nan", "--do-sample"], "--temperature: expected a number > 0, got nan"),
    (["--top-p", "0", "--do-sample"], "--top-p: expected a number in (0, 1]"),
    (["--top-p", "1.5", "--do-sample"], "--top-p: expected a number in (0, 1]"),
    (["--top-k", "-1", "--do-sample"], "--top-k: expected an integer >= 0"),
    (["--num-beams", "0"], "--num-beams: expected an integer >= 1, got 0"),
    (["--max-new-tokens", "0"], "--max-new-tokens: expected an integer >= 1, got 0"),
    (["--repetition-penalty", "0"], "--repetition-penalty: expected a number > 0"),
    (["--no-repeat-ngram-size", "-2"], "--no-repeat-ngram-size: expected an integer >= 0"),
    (["--seed", "-1"], "--seed: expected an integer from 0 to 4294967295, got -1"),
    (["--temperature", "0.7"], "--temperature only apply with --do-sample"),
    (["--top-k", "5", "--top-p", "0.9"], "--top-k, --top-p only apply with --do-sample"),
    (["--stream", "--num-beams", "2"], "--stream works with one beam only"),
    (["--stream", "--json"], "--stream prints text as it comes, --json all results at the end"),
]


@pytest.mark.parametrize(("args", "fragment"), BAD_NUMBERS, ids=[" ".join(a) for a, _ in BAD_NUMBERS])
def test_bad_options_are_one_line(gpt2_dir, capsys, args, fragment):
    assert fragment in _one_line(capsys, "--model", str(gpt2_dir), *args, "A prompt")


def test_bad_models_and_prompts_are_one_line(gpt2_dir, capsys, tmp_path):
    model = str(gpt2_dir)
    line = _one_line(capsys, "--model", MODEL, "A prompt")  # a masked LM
    assert "builtin:splade-tiny is a BertForMaskedLM (a masked-LM), not a causal LM; use a decoder model" in line
    line = _one_line(capsys, "--model", model, "--chat", "A prompt")
    assert line.endswith(f"{model}'s tokenizer has no chat template; drop --chat")
    long_prompt = " ".join(["movie"] * 60)
    count = len(_stock(gpt2_dir)[1](long_prompt)["input_ids"])
    assert 54 < count <= POSITIONS
    line = _one_line(capsys, "--model", model, "--max-new-tokens", "10", "short", long_prompt)
    assert f"is {count} tokens: with --max-new-tokens 10 that is {count + 10} positions, more than" in line
    assert f"context of {POSITIONS}; shorten the prompt to at most 54 tokens or lower --max-new-tokens" in line
    line = _one_line(capsys, "--model", model, "--max-new-tokens", "64", "short")
    assert f"--max-new-tokens: 64 leaves no room for a prompt in {model}'s context of 64 positions" in line
    assert "has no tokens; give some text to continue" in _one_line(capsys, "--model", model, "")
    no_eos = tmp_path / "no-eos"
    shutil.copytree(gpt2_dir, no_eos)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (no_eos / name).unlink(missing_ok=True)
    _bpe(_reviews(50), eos=False).save_pretrained(no_eos)
    line = _one_line(capsys, "--model", str(no_eos), "A prompt")
    assert line.endswith(
        "its tokenizer has no end-of-text token (eos_token); a causal LM needs one to end documents and generations"
    )


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--model", MODEL, "A prompt"], "not a causal LM"),
        (["--max-new-tokens", "60", "A prompt that is rather too long"], "shorten the prompt to at most 4 tokens"),
    ],
    ids=["masked-lm", "long-prompt"],
)
def test_a_bad_input_in_a_real_process_is_one_line(gpt2_dir, args, fragment):
    """As a user runs it: the second fails after the model loaded, so no loading bar may precede the line."""
    result = run_cli("predict", "generate", "--model", str(gpt2_dir), *args)
    assert result.returncode != 0 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kfnlp: error: ") and fragment in lines[0], result.stderr
