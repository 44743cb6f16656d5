"""``kfnlp predict … --endpoint``: the client side of a model deployed on KServe's Hugging Face runtime. A loopback
stand-in of the runtime (tests/support/hf_runtime.py: its formats as read from its source, the real model's
forward pass, lower-casing unless told not to, label ids, ungrouped tokens) answers; the client's answers equal
``kfnlp.predict``'s local ones on the same texts, over v1 and v2, with and without ``--return_probabilities``
(without, scores are None and only the top answer is known); an unreachable endpoint, an error status and an
answer of the wrong shape each make one line."""

from __future__ import annotations

import json
import shutil

import pytest

from kfnlp.errors import ConfigError
from kfnlp.serving.client import DeployedModel, Endpoint, predict
from kfnlp.storage.manifest import MANIFEST
from tests.support.cli import MODEL, run_cli
from tests.support.hf_runtime import HfRuntime
from tests.support.loopback import free_port

PROTOCOLS = ["v1", "v2"]


def same(got, expected, *, scores: bool, where: str = "") -> None:
    """The same answers; a score equal to the local one to the runtime's 4 decimals (an entity's score is a
    mean of 4-decimal probabilities), or None when the runtime sent ids only."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys(), where
        for key, value in expected.items():
            if key == "score":
                assert got[key] == pytest.approx(value, abs=2e-4) if scores else got[key] is None, f"{where}.{key}"
            else:
                same(got[key], value, scores=scores, where=f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), where
        for index, (a, b) in enumerate(zip(got, expected, strict=True)):
            same(a, b, scores=scores, where=f"{where}[{index}]")
    else:
        assert got == expected, where


@pytest.fixture(scope="module")
def mlm_dir() -> str:
    from kfnlp.modeling import model_dir

    return model_dir(MODEL)


NER_TEXTS = ["yesterday we met Obama in Berlin", "Macron was in London and Paris", "nothing here"]


@pytest.mark.parametrize("probabilities", [True, False], ids=["probabilities", "ids"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_ner_grouped_with_label_names_as_predict_does(entity_model, protocol, probabilities):
    from kfnlp.predict import entities

    expected = entities(str(entity_model), NER_TEXTS)
    assert any(item["entities"] for item in expected)  # the grouping is tested on real entities
    with HfRuntime(str(entity_model), "ner", "token_classification", return_probabilities=probabilities) as runtime:
        got = predict("token-classification", Endpoint(runtime.url, "ner", protocol), str(entity_model), NER_TEXTS)
    same(got, expected, scores=probabilities)
    assert runtime.requests  # answered by the stand-in, in the protocol asked for
    assert ("instances" in runtime.requests[0]) == (protocol == "v1")


@pytest.mark.parametrize("probabilities", [True, False], ids=["probabilities", "ids"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_classification_label_names_as_predict_does(sentiment_model, protocol, probabilities):
    from kfnlp.predict import classify

    texts = ["A wonderful, moving film.", "Dull and far too long; I left early."]
    top_k = 2 if probabilities else 1
    expected = classify(str(sentiment_model), texts, top_k=top_k)
    with HfRuntime(
        str(sentiment_model), "cls", "sequence_classification", return_probabilities=probabilities
    ) as runtime:
        got = predict(
            "text-classification", Endpoint(runtime.url, "cls", protocol), str(sentiment_model), texts, top_k=2
        )
    same(got, expected, scores=probabilities)


@pytest.mark.parametrize("probabilities", [True, False], ids=["probabilities", "ids"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_fill_mask_as_predict_does(mlm_dir, protocol, probabilities):
    from kfnlp.predict import fill_mask

    texts = ["This movie was a great [MASK].", "I [MASK] this one."]
    top_k = 3 if probabilities else 1
    expected = fill_mask(MODEL, texts, top_k=top_k)
    with HfRuntime(mlm_dir, "mlm", "fill_mask", return_probabilities=probabilities) as runtime:
        got = predict("fill-mask", Endpoint(runtime.url, "mlm", protocol), MODEL, texts, top_k=3)
    same(got, expected, scores=probabilities)
    assert all("[MASK]" in text for text in runtime.requests[0].get("instances", texts))


def test_a_cased_model_needs_the_runtime_told_not_to_lower_case(entity_model, tmp_path):
    """The runtime's habit: a cased tokenizer lower-cased unless ``--disable_lower_case`` (what ``kfnlp deploy``
    renders for it). Told, the client's entities equal predict's; not told, the model sees other tokens, and
    the client, told the runtime lower-cases, still points each entity into the text as sent."""
    from kfnlp.predict import entities

    cased = tmp_path / "cased"
    shutil.copytree(entity_model, cased, ignore=shutil.ignore_patterns(MANIFEST))  # a plain model directory
    config = json.loads((cased / "tokenizer_config.json").read_text())
    (cased / "tokenizer_config.json").write_text(json.dumps({**config, "do_lower_case": False}))
    texts = ["yesterday we met Obama in Berlin"]
    expected = entities(str(cased), texts)
    with HfRuntime(str(cased), "ner", "token_classification", disable_lower_case=True) as told:
        same(predict("token-classification", Endpoint(told.url, "ner"), str(cased), texts), expected, scores=False)
    with HfRuntime(str(cased), "ner", "token_classification") as untold:
        assert untold.tokenizer.tokenize("Obama") != DeployedModel.load(str(cased)).tokenizer.tokenize("Obama")
        got = predict("token-classification", Endpoint(untold.url, "ner"), str(cased), texts, lower_case=True)
    assert got[0]["entities"]
    for entity in got[0]["entities"]:
        assert texts[0][entity["start"] : entity["end"]].lower() == entity["word"]


def test_cli_predict_with_endpoint(sentiment_model):
    from kfnlp.predict import classify

    texts = ["A wonderful, moving film."]
    with HfRuntime(str(sentiment_model), "cls-model", "sequence_classification", return_probabilities=True) as runtime:
        result = run_cli(
            "predict", "text-classification", "--endpoint", runtime.url, "--protocol", "v2", "--name", "cls-model",
            "--model", str(sentiment_model), "--top-k", "2", "--json", *texts,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    same(json.loads(result.stdout), classify(str(sentiment_model), texts, top_k=2), scores=True)


def test_error_lines(sentiment_model):
    texts = ["fine"]
    unreachable = Endpoint(f"http://127.0.0.1:{free_port()}", "cls")
    with pytest.raises(ConfigError, match=r"^--endpoint http://127\.0\.0\.1:\d+/v1/models/cls:predict: cannot connect"):
        predict("text-classification", unreachable, str(sentiment_model), texts)
    with HfRuntime(str(sentiment_model), "cls", "sequence_classification") as runtime:
        with pytest.raises(ConfigError, match=r"HTTP 404 Not Found: Model with name other does not exist\.$"):
            predict("text-classification", Endpoint(runtime.url, "other"), str(sentiment_model), texts)
        # answers of the wrong shape: a list where a label id belongs, a label the model does not have
        runtime.inferences = lambda texts: [[1, 0]]
        with pytest.raises(ConfigError, match="expected a label id or probabilities per text, got"):
            predict("text-classification", Endpoint(runtime.url, "cls"), str(sentiment_model), texts)
        runtime.inferences = lambda texts: [7]
        with pytest.raises(ConfigError, match="the runtime answered label id 7; the model has 2 labels"):
            predict("text-classification", Endpoint(runtime.url, "cls"), str(sentiment_model), texts)
        runtime.inferences = lambda texts: [0]  # one prediction for two texts
        with pytest.raises(ConfigError, match="1 predictions for 2 texts"):
            predict("text-classification", Endpoint(runtime.url, "cls"), str(sentiment_model), ["a", "b"])
    result = run_cli(
        "predict", "text-classification", "--endpoint", unreachable.url, "--model", str(sentiment_model), "fine"
    )  # fmt: skip
    assert result.returncode == 2 and "cannot connect" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("name", ["../admin", "a/b", "cls?x=1", "cls#frag", ".."])
def test_a_model_name_cannot_change_the_request_path(name):
    """--name goes into the URL's path: one that would leave /v1/models/NAME is refused before any request."""
    with pytest.raises(ConfigError, match=r"^--name: expected a model name"):
        Endpoint("http://127.0.0.1:1", name).check()
