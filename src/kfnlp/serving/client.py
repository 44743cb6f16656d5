"""Calling a model deployed on KServe's Hugging Face runtime and getting what ``kfnlp predict`` gives locally.

The runtime (``huggingfaceserver``, what ``kfnlp deploy`` runs) answers in its own raw terms: a label id per
text (sequence classification), a label id per token, padding and special tokens included, ungrouped (token
classification), the decoded top-1 token (fill-mask); with ``--return_probabilities`` it gives, instead, the
softmax per label, per token, or per vocabulary entry, rounded to 4 decimals. It also lower-cases the input
unless it runs with ``--disable_lower_case``. This module sends the texts (v1 ``{"instances": [...]}`` or an
Open Inference v2 ``BYTES`` tensor) and turns the answer into :mod:`kfnlp.predict`'s shapes with the deployed
model's own config.json (label names) and tokenizer (read as the runtime read the text: the token offsets
that group NER word pieces into entities, exactly as the token-classification pipeline groups them). Without
probabilities there are no scores: ``score`` is None and only the top answer is known."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Any

from kfnlp.config import bounded, shown
from kfnlp.errors import ConfigError, InputError
from kfnlp.predict import ner_answer

MODEL_NAME = re.compile(r"^(?!\.+$)[A-Za-z0-9._-]+$")

TASKS = ("fill-mask", "token-classification", "text-classification")
PROTOCOLS = ("v1", "v2")


@dataclass(frozen=True)
class Endpoint:
    """Where the InferenceService answers: its base URL (``http://NAME.NAMESPACE.example.com``, or a
    port-forward's ``http://127.0.0.1:8080``), its model name (``--model_name``: the InferenceService's name
    under ``kfnlp deploy``) and the protocol."""

    url: str
    name: str
    protocol: str = "v1"
    timeout: float = 60.0

    def check(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"--endpoint: expected an http:// or https:// URL, got {shown(self.url)}")
        if "/models/" in self.url:
            raise ConfigError(
                f"--endpoint: give the InferenceService's base URL (http://HOST[:PORT]), not a model path: "
                f"{shown(self.url)}; the model name goes in --name"
            )
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"--protocol: expected one of {', '.join(PROTOCOLS)}, got {shown(self.protocol)}")
        if not self.name:
            raise ConfigError("--name: the InferenceService's model name is empty")
        if not MODEL_NAME.match(self.name):  # it goes into the request's path: no '/', '..', '?' or '#'
            raise ConfigError(
                f"--name: expected a model name of letters, digits, '.', '_' and '-', got {shown(self.name)}"
            )

    @property
    def path(self) -> str:
        base = self.url.rstrip("/")
        if self.protocol == "v2":
            return f"{base}/v2/models/{self.name}/infer"
        return f"{base}/v1/models/{self.name}:predict"


def service_name(ref: str) -> str:
    """The model name in the URL when ``--name`` is not given: for ``models:/NAME@ALIAS`` or ``/VERSION`` the
    InferenceService name ``kfnlp deploy`` gives it (its ``--model_name``), else the directory's name."""
    from pathlib import PurePosixPath

    if ref.startswith("models:/"):
        from kfnlp.serving.deploy import DeployConfig, Target, parse_ref
        from kfnlp.serving.deploy import service_name as deployed_name

        name, alias, version = parse_ref(ref.removeprefix("models:/"))
        return deployed_name(Target(name, version or 0, alias, ""), DeployConfig())
    stem = PurePosixPath(ref.removeprefix("builtin:").rstrip("/")).name
    return re.sub(r"[^a-z0-9-]+", "-", stem.lower()).strip("-") or "model"


def infer(endpoint: Endpoint, texts: list[str]) -> list[Any]:
    """The runtime's raw answer for each text, in the order sent: v1 ``predictions``, or the v2 output
    tensor cut into one entry per text along its first dimension."""
    import requests

    endpoint.check()
    if endpoint.protocol == "v2":
        body = {"inputs": [{"name": "input-0", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]}
    else:
        body = {"instances": texts}
    where = f"--endpoint {endpoint.path}"
    try:
        response = requests.post(endpoint.path, json=body, timeout=endpoint.timeout)
    except requests.Timeout:
        raise ConfigError(f"{where}: no answer within {endpoint.timeout:g} s") from None
    except requests.RequestException as exc:
        reason = str(exc.__context__ or exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{where}: cannot connect ({bounded(reason, 200)})") from None
    if response.status_code >= 400:
        raise ConfigError(f"{where}: HTTP {response.status_code} {response.reason}: {_server_message(response)}")
    try:
        answer = response.json()
    except ValueError:
        raise ConfigError(f"{where}: the answer is not JSON: {shown(response.text[:200])}") from None
    if endpoint.protocol == "v2":
        return _v2_rows(answer, len(texts), where)
    if not isinstance(answer, dict) or not isinstance(answer.get("predictions"), list):
        raise ConfigError(f'{where}: expected a v1 answer {{"predictions": [...]}}, got {shown(answer)}')
    predictions = answer["predictions"]
    if len(predictions) != len(texts):
        raise ConfigError(f"{where}: {len(predictions)} predictions for {len(texts)} texts")
    return predictions


def _server_message(response) -> str:
    """The server's own words: KServe answers errors as ``{"error": "..."}`` (FastAPI: ``{"detail": ...}``)."""
    try:
        body = response.json()
    except ValueError:
        return bounded(" ".join(response.text.split()) or "(empty body)", 300)
    if isinstance(body, dict):
        for key in ("error", "detail", "message"):
            if key in body:
                return bounded(str(body[key]).replace("\n", " "), 300)
    return shown(body)


def _v2_rows(answer: Any, count: int, where: str) -> list[Any]:
    """One entry per text from an Open Inference answer's first output (``output-0``): its ``data`` laid out
    in row-major order over ``shape``, rebuilt into nested lists (the runtime sends it flat)."""
    outputs = answer.get("outputs") if isinstance(answer, dict) else None
    if not isinstance(outputs, list) or not outputs or not isinstance(outputs[0], dict):
        raise ConfigError(f'{where}: expected a v2 answer {{"outputs": [{{...}}]}}, got {shown(answer)}')
    output = outputs[0]
    shape, data = output.get("shape"), output.get("data")
    if not (isinstance(shape, list) and shape and all(isinstance(n, int) and n >= 0 for n in shape)):
        raise ConfigError(f"{where}: output {shown(output.get('name'))} has no valid shape: {shown(shape)}")
    if not isinstance(data, list):
        raise ConfigError(f"{where}: output {shown(output.get('name'))} has no data (binary outputs are not read)")
    flat = _flatten(data)
    size = 1
    for n in shape:
        size *= n
    if len(flat) != size or shape[0] != count:
        raise ConfigError(
            f"{where}: output {shown(output.get('name'))} has shape {shape} and {len(flat)} values; expected "
            f"{count} texts along the first dimension"
        )
    if output.get("datatype") == "BYTES":  # with --return_probabilities each dict comes as its Python repr
        flat = [_literal(value) for value in flat]
    return _reshape(flat, shape)


def _flatten(data: list) -> list:
    out: list = []
    for value in data:
        if isinstance(value, list):
            out.extend(_flatten(value))
        else:
            out.append(value)
    return out


def _reshape(flat: list, shape: list[int]) -> list:
    if len(shape) == 1:
        return list(flat)
    step = len(flat) // shape[0] if shape[0] else 0
    return [_reshape(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def _literal(value: Any) -> Any:
    """A ``{0: 0.25, ...}`` string (the runtime's ``str()`` of a dict in a BYTES tensor) as the dict; any
    other string as it is (a decoded token, a label name)."""
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return value
        if isinstance(parsed, dict):
            return parsed
    return value


@dataclass
class DeployedModel:
    """The deployed model's own files, read as the runtime reads them: config.json (label names, tag scheme)
    and the tokenizer, lower-casing when the runtime does (``lower_case`` None: as ``kfnlp deploy`` sets it
    up, i.e. only when the tokenizer lower-cases by itself)."""

    ref: str
    config: Any
    tokenizer: Any

    @classmethod
    def load(cls, ref: str, lower_case: bool | None = None) -> DeployedModel:
        from transformers import AutoConfig, AutoTokenizer

        from kfnlp.modeling import model_dir

        location = model_dir(ref)
        try:
            config = AutoConfig.from_pretrained(location, trust_remote_code=False)
            kwargs = {} if lower_case is None else {"do_lower_case": lower_case}
            tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=False, **kwargs)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--model {ref}: cannot load its config or tokenizer: {bounded(str(exc))}") from None
        return cls(ref, config, tokenizer)

    def label(self, key: Any) -> str:
        """A label name from an id (int, or a JSON object key: a digit string) or a name the runtime gave."""
        names = self.config.id2label
        if isinstance(key, str) and key in self.config.label2id:
            return key
        try:
            index = int(key)
        except (TypeError, ValueError):
            raise ConfigError(f"{self.ref}: the runtime answered label {shown(key)}, not one of the model's") from None
        if index not in names:
            raise ConfigError(f"{self.ref}: the runtime answered label id {index}; the model has {len(names)} labels")
        return names[index]

    def index(self, key: Any) -> int:
        return self.config.label2id[self.label(key)]


def _probability(value: Any, where: str) -> float:
    """A probability the runtime sent: a float (classification) or a ``"0.1234"`` string (fill-mask)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected a probability, got {shown(value)}") from None


def classify(endpoint: Endpoint, model: DeployedModel, texts: list[str], top_k: int = 5) -> list[dict]:
    """:func:`kfnlp.predict.classify`'s answer from the runtime's ``sequence_classification``: the top
    ``top_k`` label names with their probabilities, or the one label with score None when the runtime sends
    only its id."""
    where = f"--endpoint {endpoint.path}"
    results = []
    for text, raw in zip(texts, infer(endpoint, texts), strict=True):
        if isinstance(raw, dict):
            ranked = sorted(((model.label(k), _probability(v, where)) for k, v in raw.items()), key=lambda p: -p[1])[
                : min(top_k, model.config.num_labels)
            ]
            labels = [{"label": name, "score": round(score, 6)} for name, score in ranked]
        elif isinstance(raw, int | str) and not isinstance(raw, bool):
            labels = [{"label": model.label(raw), "score": None}]
        else:
            raise ConfigError(f"{where}: expected a label id or probabilities per text, got {shown(raw)}")
        results.append({"text": text, "labels": labels})
    return results


def fill_mask(endpoint: Endpoint, model: DeployedModel, texts: list[str], top_k: int = 5) -> list[dict]:
    """:func:`kfnlp.predict.fill_mask`'s answer from the runtime's ``fill_mask``: each text sent with the
    model's mask token for ``[MASK]`` (exactly one), the top ``top_k`` tokens decoded as the fill-mask
    pipeline decodes them; the runtime's own top-1 string, score None, when it sends no probabilities."""
    tokenizer = model.tokenizer
    prepared = []
    for text in texts:
        sent = text.replace("[MASK]", tokenizer.mask_token)
        count = sent.count(tokenizer.mask_token)
        if count != 1:
            raise InputError(f"{text!r}: expected exactly one [MASK], found {count}")
        prepared.append(sent)
    where = f"--endpoint {endpoint.path}"
    results = []
    for text, raw in zip(texts, infer(endpoint, prepared), strict=True):
        if isinstance(raw, str):
            predictions = [{"token": raw, "score": None}]
        elif isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], list):
            scored = []
            for entry in raw[0]:  # one {token_id: "probability"} per vocabulary entry
                if not isinstance(entry, dict) or len(entry) != 1:
                    raise ConfigError(f"{where}: expected one {{token_id: probability}} per entry, got {shown(entry)}")
                [(key, value)] = entry.items()
                scored.append((int(key), _probability(value, where)))
            ranked = sorted(scored, key=lambda p: -p[1])[:top_k]
            predictions = [{"token": tokenizer.decode([i]), "score": round(p, 6)} for i, p in ranked]
        else:
            raise ConfigError(f"{where}: expected a token or one list of probabilities per text, got {shown(raw)}")
        results.append({"text": text, "predictions": predictions})
    return results


def entities(endpoint: Endpoint, model: DeployedModel, texts: list[str]) -> list[dict]:
    """:func:`kfnlp.predict.entities`'s answer from the runtime's ``token_classification``: the text
    tokenized again as the runtime tokenized it (special tokens, truncation at the model's length), each
    token's scores (the runtime's probabilities, or its label id as certainty), then the token-classification
    pipeline's own grouping (``aggregation_strategy="simple"``, ``O`` left out) over those scores and the
    token offsets. Entity scores are None when the runtime sent ids only."""
    import numpy as np

    labels = [str(label) for label in model.config.id2label.values()]
    scheme = getattr(model.config, "tag_scheme", None)
    if scheme is None and any(label.startswith(("B-", "I-")) for label in labels):
        scheme = "iob2"
    if scheme == "plain":
        raise ConfigError(
            f"{model.ref}: a model of plain tags is tagged word by word (predict ner); the runtime tags text "
            "tokens, so its answer cannot be turned into the same words: use kfnlp serve or predict ner"
        )
    if scheme != "iob2":
        raise InputError(f"{model.ref}: not an NER model (its labels are {labels[:5]}...)")
    grouper = _grouper(model)
    where = f"--endpoint {endpoint.path}"
    results = []
    for text, raw in zip(texts, infer(endpoint, texts), strict=True):
        encoded = model.tokenizer(
            text,
            truncation=True,
            max_length=_max_length(model),
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
        )
        scores, known = _token_scores(raw, model, len(encoded["input_ids"]), where)
        pre = grouper.gather_pre_entities(
            text,
            np.array(encoded["input_ids"]),
            scores,
            [tuple(pair) for pair in encoded["offset_mapping"]],
            np.array(encoded["special_tokens_mask"]),
            _simple(),
        )
        found = [e for e in grouper.aggregate(pre, _simple()) if e.get("entity_group") != "O"]
        results.append(ner_answer(text, found, scored=known))
    return results


def _simple():
    from transformers.pipelines.token_classification import AggregationStrategy

    return AggregationStrategy.SIMPLE


def _grouper(model: DeployedModel):
    """The token-classification pipeline's grouping steps without a model to run: ``gather_pre_entities`` and
    ``aggregate`` (strategy simple) read only the tokenizer and the config's label names."""
    from types import SimpleNamespace

    from transformers import TokenClassificationPipeline

    grouper = TokenClassificationPipeline.__new__(TokenClassificationPipeline)
    grouper.tokenizer = model.tokenizer
    grouper.model = SimpleNamespace(config=model.config)
    return grouper


def _max_length(model: DeployedModel) -> int | None:
    """Where the runtime truncates: the model's position limit (its ``--max_model_len`` default)."""
    limit = getattr(model.config, "max_position_embeddings", None)
    return limit if isinstance(limit, int) and not isinstance(limit, bool) else None


def _token_scores(raw: Any, model: DeployedModel, tokens: int, where: str):
    """A (tokens, labels) matrix of the runtime's per-token scores, with whether they are probabilities:
    its rows cover the whole padded batch, so the text's own tokens are the first ``tokens`` rows (the
    last, for a tokenizer that pads on the left)."""
    import numpy as np

    if isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], list):
        raw = raw[0]  # the label ids come as [[id, id, ...]]: argmax kept the batch dimension of one text
    if not isinstance(raw, list) or len(raw) < tokens:
        got = len(raw) if isinstance(raw, list) else shown(raw)
        raise ConfigError(f"{where}: expected one prediction per token ({tokens} for this text), got {got}")
    rows = raw[-tokens:] if model.tokenizer.padding_side == "left" else raw[:tokens]
    scores = np.zeros((tokens, len(model.config.id2label)), dtype=np.float64)
    known = all(isinstance(row, dict) for row in rows)
    for i, row in enumerate(rows):
        if isinstance(row, dict):
            for key, value in row.items():
                scores[i, model.index(key)] = _probability(value, where)
        elif isinstance(row, int | str) and not isinstance(row, bool) and not known:
            scores[i, model.index(row)] = 1.0
        else:
            raise ConfigError(f"{where}: expected a label id or probabilities per token, got {shown(row)}")
    return scores, known


def predict(
    task: str, endpoint: Endpoint, ref: str, texts: list[str], *, top_k: int = 5, lower_case: bool | None = None
) -> list[dict]:
    """``kfnlp predict TASK --endpoint``: ``task`` one of :data:`TASKS`, the model's files from ``ref``."""
    if task not in TASKS:
        raise ConfigError(f"task {task!r}: a deployed model answers {', '.join(TASKS)}")
    endpoint.check()
    model = DeployedModel.load(ref, lower_case)
    if task == "token-classification":
        return entities(endpoint, model, texts)
    if task == "text-classification":
        return classify(endpoint, model, texts, top_k)
    return fill_mask(endpoint, model, texts, top_k)


__all__ = ["PROTOCOLS", "TASKS", "DeployedModel", "Endpoint", "classify", "entities", "fill_mask", "infer", "predict"]
