"""``kfnlp serve``: a kfnlp model behind KServe's own Python model server, speaking its v1 and Open Inference (v2)
REST protocols, with request batching, limits and one-line JSON errors.

KServe's server brings the routes (``/v1/models/NAME:predict``, ``/v2/models/NAME/infer``, the health and
readiness endpoints, ``/metrics``), the request decoding and the error handlers; kfnlp adds the model
(:class:`KfnlpModel`, a ``kserve.Model``), the batcher, a body-size limit in front of everything, and the
host to listen on (KServe's REST server always binds every interface; a local tool binds loopback by default).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from dataclasses import dataclass
from typing import Any

from kfnlp.config import option, shown
from kfnlp.errors import ConfigError, InputError
from kfnlp.serving.batching import Batcher
from kfnlp.serving.tasks import TASKS, Runner

log = logging.getLogger(__name__)

OUTPUT_NAME = "predictions"  # the v2 output tensor: one JSON document per input text (BYTES)
V1_KEYS = {"instances"}


def kserve_modules():
    """``kserve`` and its model server, imported with an empty command line: ``kserve.model_server`` parses
    ``sys.argv`` when imported (its own flags, abbreviations included: ``kfnlp serve --model`` would read as
    ``--model_name``)."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        import kserve
        import kserve.model_server
    except ImportError as exc:
        raise ConfigError(
            f"kfnlp serve needs KServe's model server ({exc}); install it: pip install 'kfnlp[serve]'"
        ) from None
    finally:
        sys.argv = saved
    return kserve, kserve.model_server


@dataclass
class Request:
    """A request's texts, and the v2 request they came in (None for v1)."""

    texts: list[str]
    v2: Any = None


def model_class():
    """:class:`KfnlpModel`, defined once kserve is imported (it subclasses ``kserve.Model``)."""
    global KfnlpModel
    if "KfnlpModel" in globals():
        return KfnlpModel
    kserve, _ = kserve_modules()
    from kserve.errors import InvalidInput
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

    class TooLarge(InvalidInput):
        """A request over a limit: 413."""

    class Model(kserve.Model):
        """One kfnlp model on KServe's model server: texts in (v1 ``instances``, or one v2 BYTES input
        tensor), the task's answers out, each request's texts batched with other requests' by the batcher."""

        too_large = TooLarge

        def __init__(self, name: str, runner: Runner, batcher: Batcher, max_instances: int):
            super().__init__(name)
            self.runner = runner
            self.batcher = batcher
            self.max_instances = max_instances

        def load(self) -> bool:
            self.ready = True  # the runner loaded the model already
            return self.ready

        def validate(self, payload):
            return payload  # preprocess checked it

        async def preprocess(self, payload, headers=None) -> Request:
            if isinstance(payload, InferRequest):
                texts, v2 = self._v2_texts(payload), payload
            elif isinstance(payload, dict):
                texts, v2 = self._v1_texts(payload), None
            else:
                what = "a body that is not JSON" if isinstance(payload, bytes) else type(payload).__name__
                raise InvalidInput(
                    f'expected a JSON object {{"instances": [text, ...]}} sent as Content-Type: application/json, '
                    f"got {what}"
                )
            if not texts:
                raise InvalidInput("no texts to answer: instances (v1) or the input's data (v2) is empty")
            if len(texts) > self.max_instances:
                raise TooLarge(
                    f"{len(texts)} texts in one request, more than the limit of {self.max_instances} "
                    "(--max-instances); split the request"
                )
            for index, text in enumerate(texts):
                try:
                    self.runner.check(text)
                except InputError as exc:
                    raise InvalidInput(f"text {index}: {exc}") from None
            return Request(texts, v2)

        def _v1_texts(self, payload: dict) -> list:
            if "instances" not in payload:
                raise InvalidInput(
                    f'expected {{"instances": [text, ...]}} (KServe v1), got keys {sorted(payload)[:10]}; '
                    'for Open Inference (v2) send {"inputs": [...]} to /v2/models/NAME/infer'
                )
            unknown = sorted(set(payload) - V1_KEYS)
            if unknown:
                raise InvalidInput(f"unknown keys {unknown[:10]}: a v1 request holds instances only")
            instances = payload["instances"]
            if not isinstance(instances, list):
                raise InvalidInput(f"instances: expected a list of texts, got {type(instances).__name__}")
            return instances

        def _v2_texts(self, request) -> list:
            inputs = request.inputs
            if len(inputs) != 1:
                raise InvalidInput(f"expected one input tensor of texts (BYTES), got {len(inputs)}")
            tensor = inputs[0]
            if tensor.datatype != "BYTES":
                raise InvalidInput(
                    f"input {shown(tensor.name)}: expected datatype BYTES (texts), got {tensor.datatype}"
                )
            data = tensor.data
            if not isinstance(data, list):
                raise InvalidInput(f"input {shown(tensor.name)}: expected data as a JSON list of texts")
            if len(tensor.shape) != 1 or tensor.shape[0] != len(data):
                raise InvalidInput(
                    f"input {shown(tensor.name)}: shape {tensor.shape} does not fit {len(data)} texts; "
                    f"expected [{len(data)}]"
                )
            return [text.decode("utf-8") if isinstance(text, bytes) else text for text in data]

        async def predict(self, payload: Request, headers=None, response_headers=None):
            return await self.batcher.submit(payload.texts)

        async def postprocess(self, result, headers=None, response_headers=None):
            return result  # shaped in __call__, which knows the request

        async def __call__(self, body, headers=None, verb=None):
            request = await self.preprocess(body, headers)
            answers = await self.predict(request, headers)
            if request.v2 is None:
                return {"predictions": answers}, {}
            output = InferOutput(
                name=OUTPUT_NAME,
                shape=[len(answers)],
                datatype="BYTES",
                data=[json.dumps(answer, ensure_ascii=False) for answer in answers],
            )
            return InferResponse(
                response_id=request.v2.id or str(uuid.uuid4()), model_name=self.name, infer_outputs=[output]
            ), {}

    KfnlpModel = Model
    return Model


@dataclass
class ServeConfig:
    """What ``kfnlp serve`` serves and how: the model, where it listens, the batching and the request limits."""

    model: str = option(
        "",
        "model directory, kfnlp model artifact (local or s3://), Hub id, builtin:NAME or models:/NAME@ALIAS",
        kind="model",
    )
    name: str = option("", "the model's name in the URLs (/v1/models/NAME:predict); default: from the reference")
    task: str = option("", f"one of {', '.join(TASKS)}; default: the task of the model's head (config.json)")
    host: str = option("127.0.0.1", "the address to listen on (0.0.0.0: every interface)")
    port: int = option(8080, "the HTTP port (0: any free port, printed when listening)")
    max_batch_size: int = option(32, "most texts in one forward pass; concurrent requests are gathered up to it")
    max_latency_ms: float = option(
        5.0, "longest a request waits for others to join its batch, in milliseconds (0: no waiting)"
    )
    max_request_bytes: int = option(1_048_576, "largest request body, in bytes (413 above it)")
    max_instances: int = option(64, "most texts in one request (413 above it)")
    max_length: int = option(
        0, "most tokens in one text, special tokens included (400 above it); 0: the model's position limit"
    )
    top_k: int = option(5, "fill-mask: predictions per text; text-classification: labels per text")
    max_new_tokens: int = option(50, "text-generation: most tokens added to each prompt (greedy decoding)")

    def check(self) -> None:
        if not self.model:
            raise ConfigError("--model: give the model to serve (a directory, s3://, models:/NAME@ALIAS, ...)")
        if self.task and self.task not in TASKS:
            raise ConfigError(f"--task: expected one of {', '.join(TASKS)}, got {shown(self.task)}")
        if self.name and not NAME.fullmatch(self.name):
            raise ConfigError(f"--name: expected letters, digits, '-', '_' or '.', got {shown(self.name)}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port: expected 0 to 65535, got {self.port}")
        for key in ("max_batch_size", "max_request_bytes", "max_instances", "top_k", "max_new_tokens"):
            if getattr(self, key) < 1:
                raise ConfigError(f"--{key.replace('_', '-')}: expected an integer >= 1, got {getattr(self, key)}")
        if self.max_length < 0:
            raise ConfigError(f"--max-length: expected 0 (the model's limit) or more, got {self.max_length}")
        if not 0 <= self.max_latency_ms <= 10_000:
            raise ConfigError(f"--max-latency-ms: expected 0 to 10000, got {self.max_latency_ms}")

    def model_name(self) -> str:
        """The name in the URLs: ``--name``, else the registered model's name or the directory's."""
        if self.name:
            return self.name
        ref = self.model.rstrip("/")
        if ref.startswith("models:/"):
            ref = re.split(r"[@/]", ref[len("models:/") :])[0]
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", ref.rsplit("/", 1)[-1].split(":")[-1]).strip("-.")
        return name or "model"


NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_METRICS: dict[str, Any] = {}


def metrics() -> dict[str, Any]:
    """kfnlp's Prometheus metrics (on KServe's ``/metrics``): the texts and requests of each batch, and the batch
    size of each forward pass of the model (generation: one per prompt)."""
    if not _METRICS:
        from prometheus_client import Histogram

        buckets = (1, 2, 4, 8, 16, 32, 64, 128, 256)
        _METRICS.update(
            batch_texts=Histogram("kfnlp_serve_batch_texts", "texts per batch the batcher ran", buckets=buckets),
            batch_requests=Histogram("kfnlp_serve_batch_requests", "requests gathered into a batch", buckets=buckets),
            forward=Histogram("kfnlp_serve_forward_batch_size", "batch size of each forward pass", buckets=buckets),
        )
    return _METRICS


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets a 413 before any of it is decoded (by its declared
    Content-Length, or, chunked, by counting as it arrives)."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                return await send_error(send, 400, f"Content-Length {shown(declared.decode('latin-1'))}: not a number")
            if size > self.max_bytes:
                return await send_error(send, 413, self._too_large(size))
            return await self.app(scope, receive, send)  # the HTTP server holds the body to its declared length
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await send_error(send, 413, self._too_large(size, sent=True))
            if not message.get("more_body"):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    def _too_large(self, size: int, sent: bool = False) -> str:
        what = "more than" if sent else f"{size} bytes,"
        return f"request body {what} {'the' if sent else 'more than the'} limit of {self.max_bytes} bytes (--max-request-bytes)"


async def send_error(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def build_app(config: ServeConfig, runner: Runner):
    """KServe's FastAPI app with the model registered, kfnlp's metrics, limits and error handlers; and the model."""
    _, model_server = kserve_modules()
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from kserve.errors import InvalidInput, ModelNotFound
    from kserve.protocol.rest.server import RESTServer

    found = metrics()
    runner.on_forward = found["forward"].observe
    batcher = Batcher(runner.run, config.max_batch_size, config.max_latency_ms)
    batcher.on_batch = lambda texts, requests: (
        found["batch_texts"].observe(texts),
        found["batch_requests"].observe(requests),
    )
    model = model_class()(config.model_name(), runner, batcher, config.max_instances)
    model.load()
    server = model_server.ModelServer(
        http_port=config.port, enable_grpc=False, enable_latency_logging=False, enable_docs_url=False
    )
    server.register_model(model)
    rest = RESTServer(
        model_server.FASTAPI_APP_IMPORT_STRING, server.dataplane, server.model_repository_extension, config.port
    )
    rest.create_application()
    app = model_server.app

    def refused(status: int):
        async def handler(_request, exc):
            text = str(exc) if not isinstance(exc, RequestValidationError) else validation_message(exc)
            log.info("refused (%d): %s", status, text)
            return JSONResponse(status_code=status, content={"error": text})

        return handler

    app.add_exception_handler(InvalidInput, refused(400))
    app.add_exception_handler(ModelNotFound, refused(404))
    app.add_exception_handler(model.too_large, refused(413))
    app.add_exception_handler(RequestValidationError, refused(400))
    app.add_middleware(BodyLimit, max_bytes=config.max_request_bytes)
    return app, model


def validation_message(exc) -> str:
    """FastAPI's list of validation errors (a v2 request that is not an Open Inference request) in one line."""
    parts = []
    errors = [e for e in exc.errors() if tuple(e.get("loc", ()))[:2] != ("body", "bytes")]  # the Union's raw branch
    for error in (errors or exc.errors())[:5]:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        parts.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
    return "not an Open Inference request: " + "; ".join(parts)


def serve(config: ServeConfig, *, on_listening=None) -> None:
    """Load the model, then answer requests until interrupted (SIGINT/SIGTERM: in-flight requests finish)."""
    import uvicorn

    from kfnlp.serving.tasks import load_runner

    config.check()
    sock = listening_socket(config.host, config.port)  # before the model loads: a taken port fails at once
    runner = load_runner(
        config.model,
        config.task,
        max_length=config.max_length,
        top_k=config.top_k,
        max_new_tokens=config.max_new_tokens,
    )
    app, model = build_app(config, runner)
    for name in ("kserve", "kserve.trace"):  # one line per request and per timing: on with --debug
        if not log.isEnabledFor(logging.DEBUG):
            logging.getLogger(name).setLevel(logging.WARNING)

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            if self.started and on_listening is not None:
                host, port = self.servers[0].sockets[0].getsockname()[:2]
                on_listening(host, port, model)

    server = Server(
        uvicorn.Config(app, host=config.host, port=config.port, log_config=None, access_log=False, loop="asyncio")
    )
    try:
        server.run(sockets=[sock])
    finally:
        model.batcher.close()
        sock.close()


def listening_socket(host: str, port: int):
    """A TCP socket bound to ``host:port`` (IPv4 or IPv6), or ConfigError in one line."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {shown(host)}: not an address here ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"--host {host} --port {port}: cannot listen there ({exc.strerror})") from None
    sock.set_inheritable(True)
    return sock
