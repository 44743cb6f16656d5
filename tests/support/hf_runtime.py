"""A loopback stand-in of KServe's Hugging Face runtime (``huggingfaceserver``'s encoder model) answering in its
formats, as read from its source (kserve/kserve, python/huggingfaceserver/huggingfaceserver/encoder_model.py and
kserve.utils.utils get_predict_input/get_predict_response; not checked against a running KServe):

- the tokenizer loaded with ``do_lower_case=True`` unless ``--disable_lower_case``; the texts of a request
  tokenized together (``padding=True``, ``truncation=True`` at the model's position limit, special tokens);
  one forward pass of the real model;
- sequence_classification: the argmax label id per text, or with ``--return_probabilities`` ``{id: p}``
  (p rounded to 4 decimals);
- token_classification: ``[[id, ...]]`` per text (argmax over labels of every position, padding included),
  or a list of ``{id: p}`` per position;
- fill_mask: the decoded argmax token at the mask, or per mask a list of ``{token_id: "p"}`` over the vocabulary;
- v1 ``{"instances": [...]}`` -> ``{"predictions": [...]}``; v2 BYTES input -> ``output-0``: INT64 (ids,
  flattened, shape of the nested list) or BYTES (strings; a dict sent as its ``str()``);
- errors as KServe's ``{"error": "..."}``: 404 for an unknown model, 400 for a bad payload.

It runs in a thread of the test process (the model's forward pass is the real one)."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler

import numpy as np
import torch

from tests.support.loopback import LoopbackHttp


class HfRuntime:
    def __init__(
        self, model_dir: str, name: str, task: str, *, disable_lower_case: bool = False,
        return_probabilities: bool = False,
    ):  # fmt: skip
        from transformers import (
            AutoConfig,
            AutoModelForMaskedLM,
            AutoModelForSequenceClassification,
            AutoModelForTokenClassification,
            AutoTokenizer,
        )

        classes = {
            "fill_mask": AutoModelForMaskedLM,
            "token_classification": AutoModelForTokenClassification,
            "sequence_classification": AutoModelForSequenceClassification,
        }
        self.name, self.task, self.return_probabilities = name, task, return_probabilities
        self.config = AutoConfig.from_pretrained(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, do_lower_case=not disable_lower_case)
        self.model = classes[task].from_pretrained(model_dir, use_safetensors=True).eval()
        self.max_length = getattr(self.config, "max_position_embeddings", None)
        self.requests: list[dict] = []

    # --- what the runtime computes -------------------------------------------------------------------------
    def inferences(self, texts: list[str]) -> list:
        inputs = self.tokenizer(texts, max_length=self.max_length, return_tensors="pt", padding=True, truncation=True)
        with torch.no_grad():
            logits = self.model(**inputs, return_dict=True).logits
        out = []
        for i in range(logits.shape[0]):
            if self.task == "sequence_classification":
                row = logits[i].unsqueeze(0)
                if self.return_probabilities:
                    probs = torch.softmax(row, dim=-1).squeeze()
                    out.append({j: float(f"{probs[j]:.4f}") for j in range(probs.size(0))})
                else:
                    out.append(row.argmax().item())
            elif self.task == "token_classification":
                row = logits[i].unsqueeze(0)
                if self.return_probabilities:
                    probs = torch.softmax(row, dim=-1).squeeze(0)
                    out.append([{j: float(f"{v[j]:.4f}") for j in range(v.size(0))} for v in probs])
                else:
                    out.append(torch.argmax(row, dim=2).tolist())
            else:
                masks = (inputs["input_ids"][i] == self.tokenizer.mask_token_id).nonzero().flatten()
                masked = logits[i, masks]
                if self.return_probabilities:
                    probs = torch.softmax(masked, dim=-1)
                    out.append([[{t: f"{p.item():.4f}"} for t, p in enumerate(row)] for row in probs])
                else:
                    out.append(self.tokenizer.decode(masked.argmax(dim=-1)))
        return out

    def v2_output(self, result: list) -> dict:
        if result and isinstance(result[0], str):
            return {"name": "output-0", "shape": [len(result)], "datatype": "BYTES", "data": result}
        array = np.array(result)
        if array.dtype == np.object_:  # dicts: BYTES, each element's str()
            data = [str(x) for x in array.flatten()]
            return {"name": "output-0", "shape": list(array.shape), "datatype": "BYTES", "data": data}
        return {"name": "output-0", "shape": list(array.shape), "datatype": "INT64", "data": array.flatten().tolist()}

    # --- HTTP ----------------------------------------------------------------------------------------------
    def answer(self, path: str, body: bytes) -> tuple[int, dict]:
        v1, v2 = f"/v1/models/{self.name}:predict", f"/v2/models/{self.name}/infer"
        if path not in (v1, v2):
            model = path.split("/models/")[-1].split(":")[0].split("/")[0]
            return 404, {"error": f"Model with name {model} does not exist."}
        try:
            payload = json.loads(body)
        except ValueError:
            return 400, {"error": "Unrecognized request format: Expecting value: line 1 column 1 (char 0)"}
        self.requests.append(payload)
        if path == v1:
            texts = payload.get("instances", payload.get("inputs"))
            return 200, {"predictions": self.inferences(texts)}
        texts = payload["inputs"][0]["data"]
        return 200, {
            "model_name": self.name,
            "model_version": None,
            "id": "stand-in",
            "parameters": None,
            "outputs": [self.v2_output(self.inferences(texts))],
        }

    def __enter__(self) -> HfRuntime:
        runtime = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, answer = runtime.answer(self.path, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.http = LoopbackHttp(Handler)
        self.url = self.http.url
        return self

    def __exit__(self, *exc) -> None:
        self.http.stop()
