"""``kfnlp serve`` as a user runs it: a subprocess on a loopback port, real HTTP requests in KServe's v1 and Open
Inference (v2) protocols. Its answers equal ``kfnlp predict``'s on the same texts (fill-mask on the embedded
model; NER and classification models made by the real train stages in seconds; a tiny GPT-2), concurrent
requests share forward passes (the model's own forward calls, counted on /metrics), and every bad request is
a 4xx with a one-line JSON error."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.cli import MODEL, run_cli
from tests.support.model_server import ServedModel

pytest.importorskip("kserve", reason="kfnlp serve needs kserve (pip install 'kfnlp[serve]'; make setup installs it)")

TEXTS = ["This movie was a great [MASK].", "The [MASK] of the film was dull.", "I [MASK] this one."]
MAX_LENGTH = 48  # tokens, for the over-long text below


def close(served, expected, where: str = "") -> None:
    """The same answers, scores equal to 1e-4 (a text padded in a batch may move the 6th decimal)."""
    if isinstance(expected, dict):
        assert isinstance(served, dict) and served.keys() == expected.keys(), where
        for key, value in expected.items():
            if key == "score" and value is not None:
                assert served[key] == pytest.approx(value, abs=1e-4), f"{where}.{key}"
            else:
                close(served[key], value, f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(served, list) and len(served) == len(expected), where
        for index, (a, b) in enumerate(zip(served, expected, strict=True)):
            close(a, b, f"{where}[{index}]")
    else:
        assert served == expected, where


@pytest.fixture(scope="module")
def fill_mask(tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "fill-mask.log"
    with ServedModel(
        MODEL, "--max-batch-size", "8", "--max-latency-ms", "250", "--max-instances", "4",
        "--max-request-bytes", "4096", "--max-length", str(MAX_LENGTH), log=log,
    ) as served:  # fmt: skip
        yield served


def test_fill_mask_v1_and_v2_answer_as_predict_does(fill_mask):
    from kfnlp.predict import fill_mask as predict_fill_mask

    expected = predict_fill_mask(MODEL, TEXTS)
    status, body = fill_mask.v1(TEXTS)
    assert status == 200, body
    close(body["predictions"], expected)
    status, body = fill_mask.v2(TEXTS)
    assert status == 200, body
    [output] = body["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("predictions", "BYTES", [len(TEXTS)])
    close([json.loads(item) for item in output["data"]], expected)


def test_health_and_readiness(fill_mask):
    assert fill_mask.name == "splade-tiny"
    assert fill_mask.get("/v2/health/live") == (200, b'{"live":true}')
    assert json.loads(fill_mask.get("/v2/health/ready")[1]) == {"ready": True}
    assert json.loads(fill_mask.get("/v2/models/splade-tiny/ready")[1]) == {"name": "splade-tiny", "ready": True}
    assert fill_mask.get("/v1/models/splade-tiny")[0] == 200
    assert fill_mask.get("/v2/models/other/ready")[0] == 404


def test_concurrent_requests_share_forward_passes(fill_mask):
    """Eight clients at once, one text each: the batcher gathers them (max 8 texts, 250 ms) into fewer forward
    passes of the model, counted by a hook on the model's own forward, and each client gets its own answer."""
    before = fill_mask.metric("kfnlp_serve_forward_batch_size")
    texts = [f"Movie number {i} was a [MASK] one." for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda text: fill_mask.v1([text]), texts))
    after = fill_mask.metric("kfnlp_serve_forward_batch_size")
    passes = after["count"] - before["count"]
    assert after["sum"] - before["sum"] == 8  # every text went through the model once
    assert passes < 8 and after["1.0"] - before["1.0"] < passes + (passes == 1), (before, after)
    assert [a[1]["predictions"][0]["text"] for a in answers] == texts
    from kfnlp.predict import fill_mask as predict_fill_mask

    close([a[1]["predictions"][0] for a in answers], predict_fill_mask(MODEL, texts))


V1_BAD = [
    ({}, 400, "instances"),
    ({"inputs": []}, 400, "instances"),
    ({"instances": "a [MASK]"}, 400, "expected a list"),
    ({"instances": [1]}, 400, "string"),
    ({"instances": [{"text": "a [MASK]"}]}, 400, "string"),
    ({"instances": []}, 400, "empty"),
    ({"instances": [""]}, 400, "empty"),
    ({"instances": ["no mask here"]}, 400, "exactly one [MASK]"),
    ({"instances": ["[MASK] and [MASK]"]}, 400, "exactly one [MASK]"),
    ({"instances": ["a [MASK]"], "top_k": 3}, 400, "unknown keys"),
    ({"instances": ["a [MASK]"] * 5}, 413, "--max-instances"),
    ({"instances": ["word " * MAX_LENGTH + "[MASK]"]}, 400, f"limit of {MAX_LENGTH}"),
    ({"instances": ["x" * 5000 + " [MASK]"]}, 413, "--max-request-bytes"),
    (b"{not json", 400, "request format"),
    (b"[1, 2]", 400, "JSON object"),
]


@pytest.mark.parametrize(("body", "status", "says"), V1_BAD, ids=range(len(V1_BAD)))
def test_bad_v1_requests_get_a_4xx_json_error(fill_mask, body, status, says):
    got, answer = fill_mask.post(f"/v1/models/{fill_mask.name}:predict", body)
    assert got == status, answer
    assert set(answer) == {"error"} and says in answer["error"] and "\n" not in answer["error"]


def tensor(**overrides) -> dict:
    return {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a [MASK]"], **overrides}]}


V2_BAD = [
    ({}, 400, "Open Inference"),
    ({"instances": ["a [MASK]"]}, 400, "Open Inference"),
    ({"inputs": []}, 400, "one input tensor"),
    ({"inputs": tensor()["inputs"] * 2}, 400, "one input tensor"),
    (tensor(datatype="INT32", data=[1]), 400, "BYTES"),
    (tensor(shape=[2]), 400, "shape"),
    (tensor(data="a [MASK]"), 400, "Open Inference"),
    (tensor(data=[7]), 400, "string"),
    (tensor(data=["no mask"]), 400, "exactly one [MASK]"),
    (tensor(shape=[5], data=["a [MASK]"] * 5), 413, "--max-instances"),
]


@pytest.mark.parametrize(("body", "status", "says"), V2_BAD, ids=range(len(V2_BAD)))
def test_bad_v2_requests_get_a_4xx_json_error(fill_mask, body, status, says):
    got, answer = fill_mask.post(f"/v2/models/{fill_mask.name}/infer", body)
    assert got == status, answer
    assert set(answer) == {"error"} and says in answer["error"] and "\n" not in answer["error"]


def test_a_chunked_body_over_the_limit_is_refused(fill_mask):
    """Without a Content-Length the limit counts the body as it arrives."""
    import http.client
    from urllib.parse import urlsplit

    where = urlsplit(fill_mask.url)
    connection = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
    chunks = iter([b'{"instances": ["', b"y" * 3000, b"y" * 3000, b' [MASK]"]}'])
    connection.request(
        "POST", f"/v1/models/{fill_mask.name}:predict", body=chunks, headers={"Content-Type": "application/json"},
        encode_chunked=True,
    )  # fmt: skip
    response = connection.getresponse()
    assert response.status == 413
    assert "--max-request-bytes" in json.loads(response.read())["error"]


def test_ner_groups_entities_with_label_names_as_predict_does(entity_model, tmp_path):
    from kfnlp.modeling import load_token_classifier
    from kfnlp.predict import entities

    texts = ["yesterday we met Obama in Berlin", "Macron was in London and Paris"]
    expected = entities(str(entity_model), texts)
    labels = set(load_token_classifier(str(entity_model)).config.id2label.values())
    with ServedModel(entity_model, "--name", "ner", log=tmp_path / "ner.log") as served:
        status, body = served.v1(texts)
        assert status == 200, body
        close(body["predictions"], expected)
        status, body = served.v2(texts)
    assert status == 200, body
    close([json.loads(item) for item in body["outputs"][0]["data"]], expected)
    groups = {e["entity_group"] for item in expected for e in item["entities"]}
    assert groups and all(f"B-{group}" in labels for group in groups)  # names, not LABEL_3


def test_text_classification_answers_as_predict_does(sentiment_model, tmp_path):
    from kfnlp.predict import classify

    texts = ["A wonderful, moving film.", "Dull and far too long; I left early."]
    expected = classify(str(sentiment_model), texts, top_k=2)
    with ServedModel(sentiment_model, "--top-k", "2", log=tmp_path / "cls.log") as served:
        assert served.name == "model"
        status, body = served.v1(texts)
    assert status == 200, body
    close(body["predictions"], expected)
    assert {label["label"] for item in body["predictions"] for label in item["labels"]} == {"neg", "pos"}


def test_text_generation_answers_as_predict_does(tmp_path):
    """A tiny random GPT-2 (64 positions) with a BPE tokenizer trained here, as test_predict_generate makes it."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from kfnlp.predict import Decoding, generate
    from tests.stages.test_predict_generate import _bpe, _reviews

    tokenizer = _bpe(_reviews(300))
    config = GPT2Config(
        n_layer=1, n_head=2, n_embd=32, n_positions=64, vocab_size=len(tokenizer),
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = tmp_path / "gpt2"
    GPT2LMHeadModel(config).save_pretrained(model)
    tokenizer.save_pretrained(model)
    prompts = ["This movie was", "The acting in this film"]
    expected = generate(str(model), prompts, Decoding(max_new_tokens=8))
    with ServedModel(model, "--max-new-tokens", "8", log=tmp_path / "gen.log") as served:
        status, body = served.v1(prompts)
        too_long = served.v1(["word " * 80])
    assert status == 200, body
    assert body["predictions"] == expected
    assert too_long[0] == 400 and "limit of 56" in too_long[1]["error"]  # 64 positions less 8 new tokens


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--model", "/nonexistent/model"], "/nonexistent/model"),
        (["--model", MODEL, "--task", "summarization"], "--task"),
        (["--model", MODEL, "--task", "token-classification"], "not an NER model"),
        (["--model", MODEL, "--max-batch-size", "0"], "--max-batch-size"),
        (["--model", MODEL, "--max-length", "100000"], "position limit"),
        (["--model", MODEL, "--host", "203.0.113.9"], "cannot listen"),
    ],
)
def test_bad_command_lines_are_one_line(args, says):
    result = run_cli("serve", "--port", "0", *args, timeout=120)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("kfnlp: error: ") and says in line, result.stderr
