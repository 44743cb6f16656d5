"""kfnlp deploy: a registry version rendered as a KServe InferenceService (checked by the kserve SDK's models),
its files found on a real S3 server (ministack) or copied there, applied through the real ``kubernetes`` client
to the loopback Kubernetes API stand-in; bad input refused in one line before any write."""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path

import pytest
import yaml

from kfnlp.cli import main
from kfnlp.errors import ConfigError
from kfnlp.registry import Registry
from kfnlp.serving.deploy import DeployConfig, DeployError, deploy_manifests, validate
from kfnlp.serving.kube import apply
from kfnlp.stages.deploy import deploy_registered
from tests.support.kube_api import KubeApi

LABELS = ["O", "B-PER", "I-PER"]


def tiny_model(path: Path, cased: bool) -> Path:
    """A 2-layer token classifier with a BERT WordPiece tokenizer (cased or not), saved as safetensors."""
    from transformers import BertConfig, BertForTokenClassification, BertTokenizerFast

    path.mkdir(parents=True)
    vocab = path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "ann", "Ann", "lives", "here"]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=not cased)
    config = BertConfig(
        vocab_size=9, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
        id2label=dict(enumerate(LABELS)), label2id={label: i for i, label in enumerate(LABELS)},
    )  # fmt: skip
    BertForTokenClassification(config).save_pretrained(str(path), safe_serialization=True)
    tokenizer.save_pretrained(str(path))
    return path


def upload(s3_bucket, local: Path, prefix: str) -> str:
    client = s3_bucket.server.client()
    for file in local.rglob("*"):
        if file.is_file():
            client.upload_file(str(file), s3_bucket.name, f"{prefix}/{file.relative_to(local).as_posix()}")
    return s3_bucket.uri(prefix)


def s3_version(registry: Registry, name: str, source: str, alias: str | None = "champion", **tags) -> int:
    """A version whose files the registry keeps on S3 (as an MLflow server with an s3:// artifact root does)."""
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):  # the model's first version creates it
        registry.client.create_registered_model(name)
    tags = {"kfnlp.task": "token-classification", "kfnlp.pipeline_run": "ner-20250101-120000", **tags}
    version = int(registry.client.create_model_version(name, source, tags=tags).version)
    if alias:
        registry.client.set_registered_model_alias(name, alias, str(version))
    return version


@pytest.fixture
def cased_on_s3(s3_bucket, tmp_path):
    model = tiny_model(tmp_path / "model", cased=True)
    return upload(s3_bucket, model, "mlflow/1/run1/artifacts/model")


def test_deploy_renders_the_version_on_s3(s3_bucket, cased_on_s3, tmp_path, capsys):
    registry = Registry()
    s3_version(registry, "ner-wnut", cased_on_s3)
    config = tmp_path / "deploy.yaml"
    config.write_text(
        "cluster:\n  gpu_resource: example.com/gpu\n  train: {gpus: 2, cpu_request: '3', node_selector: [pool=gpu]}\n"
        "deploy:\n  s3_endpoint: minio-service.kubeflow:9000\n  s3_use_https: false\n  namespace: team-a\n"
    )
    out = tmp_path / "isvc.yaml"
    capsys.readouterr()
    code = main(
        [
            "deploy",
            "ner-wnut",
            "--config",
            str(config),
            "--profile",
            "train",
            "--s3-secret",
            "kserve-s3",
            "-o",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    account, service = yaml.safe_load_all(out.read_text())
    assert account["kind"] == "ServiceAccount" and account["secrets"] == [{"name": "kserve-s3"}]
    assert account["metadata"]["annotations"] == {
        "serving.kserve.io/s3-usehttps": "0",
        "serving.kserve.io/s3-endpoint": "minio-service.kubeflow:9000",
    }
    assert "data" not in account and "stringData" not in account  # a reference, never a value
    assert service["apiVersion"] == "serving.kserve.io/v1beta1" and service["kind"] == "InferenceService"
    assert service["metadata"]["name"] == "ner-wnut" and service["metadata"]["namespace"] == "team-a"
    assert service["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "kfnlp",
        "kfnlp.io/model": "ner-wnut",
        "kfnlp.io/model-version": "1",
        "kfnlp.io/alias": "champion",
        "kfnlp.io/pipeline-run": "ner-20250101-120000",
    }
    predictor = service["spec"]["predictor"]
    assert predictor["serviceAccountName"] == "kfnlp-serving"
    assert predictor["nodeSelector"] == {"pool": "gpu"}
    model = predictor["model"]
    assert model["modelFormat"] == {"name": "huggingface"}
    assert model["storageUri"] == cased_on_s3  # the registry's own files: nothing copied
    # a cased tokenizer: the runtime must not lower-case the input
    assert model["args"] == [
        "--model_name=ner-wnut",
        "--task=token_classification",
        "--disable_lower_case",
        "--return_probabilities",
    ]
    assert model["resources"]["requests"] == {"cpu": "3", "memory": "16Gi", "example.com/gpu": "2"}
    assert model["resources"]["limits"]["example.com/gpu"] == "2"
    # what kubectl would send parses into the SDK's own model, field for field
    from kserve import V1beta1InferenceService

    built = validate(service, "V1beta1InferenceService")
    assert isinstance(built, V1beta1InferenceService)
    assert built.spec.predictor.model.storage_uri == cased_on_s3


def test_uncased_models_keep_the_runtime_lower_casing(s3_bucket, tmp_path):
    registry = Registry()
    source = upload(s3_bucket, tiny_model(tmp_path / "m", cased=False), "m")
    s3_version(registry, "uncased", source, alias="staging")
    target, (_, service) = deploy_manifests(registry, "uncased@staging", DeployConfig(s3_secret="s"))
    assert service["metadata"]["name"] == "uncased-staging"
    assert service["spec"]["predictor"]["model"]["args"] == [
        "--model_name=uncased-staging",
        "--task=token_classification",
        "--return_probabilities",
    ]


def test_off_s3_versions_are_refused_or_copied_once(s3_bucket, tmp_path, capsys):
    registry = Registry()
    model = tiny_model(tmp_path / "model", cased=False)
    registry.register("local-ner", model, metrics={}, params={}, tags={"kfnlp.task": "token-classification"}, files={})
    registry.client.set_registered_model_alias("local-ner", "champion", "1")
    capsys.readouterr()
    assert main(["deploy", "local-ner", "--s3-secret", "s"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not on S3" in err and "--storage-uri" in err
    prefix = s3_bucket.uri("serving")
    config = DeployConfig(s3_secret="s", storage_uri=prefix)
    _, (_, first) = deploy_manifests(registry, "local-ner", config)
    uri = first["spec"]["predictor"]["model"]["storageUri"]
    assert uri.startswith(f"{prefix}/local-ner/1/")
    files = {k.rsplit("/", 1)[-1] for k in s3_bucket.keys(uri.removeprefix(f"s3://{s3_bucket.name}/"))}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    count = len(s3_bucket.keys("serving"))
    _, (_, again) = deploy_manifests(registry, "local-ner", config)
    assert again["spec"]["predictor"]["model"]["storageUri"] == uri  # the same copy, not a second one
    assert len(s3_bucket.keys("serving")) == count


@pytest.mark.parametrize(
    "case, args, words",
    [
        ("no alias", ["ner-bad@staging"], "has no @staging"),
        ("no model", ["nobody"], "no model 'nobody'"),
        ("no secret", ["ner-bad/1", "--s3-secret", ""], "deploy.s3_secret"),
        ("no files", ["ner-bad/2"], "no config.json"),
        ("task", ["ner-bad/3"], "task 'summarization' is not one"),
        ("adapter", ["ner-bad/4"], "LoRA adapter"),
        ("bad quantity", ["ner-bad/1", "--set", "deploy.cpu_request=lots"], "deploy.cpu_request"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(s3_bucket, cased_on_s3, tmp_path, capsys, case, args, words):
    registry = Registry()
    s3_version(registry, "ner-bad", cased_on_s3)
    s3_version(registry, "ner-bad", s3_bucket.uri("empty/model"), alias=None)
    s3_version(registry, "ner-bad", cased_on_s3, alias=None, **{"kfnlp.task": "summarization"})
    s3_version(registry, "ner-bad", cased_on_s3, alias=None, **{"kfnlp.adapter_base": "builtin:gpt2-imdb"})
    out = tmp_path / "isvc.yaml"
    argv = ["deploy", *args, "-o", str(out)]
    if "--s3-secret" not in args:
        argv += ["--s3-secret", "kserve-s3"]
    capsys.readouterr()
    assert main(argv) == 2, case
    err = capsys.readouterr().err.strip()
    assert err.startswith("kfnlp: error: ") and "\n" not in err and words in err, err
    assert not out.exists()


def test_the_models_refuse_unknown_and_mistyped_fields():
    good = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": {"name": "x"}}
    validate(
        {**good, "spec": {"predictor": {"model": {"modelFormat": {"name": "huggingface"}}}}}, "V1beta1InferenceService"
    )
    with pytest.raises(ConfigError, match=r"\.spec\.predictor\.modle: unknown field"):
        validate({**good, "spec": {"predictor": {"modle": {}}}}, "V1beta1InferenceService")
    with pytest.raises(ConfigError, match=r"minReplicas: expected int"):
        validate({**good, "spec": {"predictor": {"minReplicas": "1"}}}, "V1beta1InferenceService")


def _ready_when_created(api: KubeApi, name: str) -> threading.Thread:
    def run():
        api.wait_for_job("inferenceservices")
        api.set_condition("inferenceservices", name, "Ready", "True", reason="Ready")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_apply_creates_waits_and_updates_in_place(s3_bucket, cased_on_s3, tmp_path):
    registry = Registry()
    s3_version(registry, "ner-apply", cased_on_s3)
    config = DeployConfig(s3_secret="kserve-s3", timeout="20s")
    with KubeApi() as api:
        api.add_secret("kserve-s3", {"awsAccessKeyID": "AKIAEXAMPLE", "awsSecretAccessKey": "do-not-print"})
        _, manifests = deploy_manifests(registry, "ner-apply", config)
        thread = _ready_when_created(api, "ner-apply")
        service = apply(manifests, config, api_client=api.client(), namespace=api.namespace, poll_s=0.05)
        thread.join(5)
        assert service["metadata"]["name"] == "ner-apply"
        assert [c.path.rsplit("/", 1)[-1] for c in api.calls("POST")] == ["serviceaccounts", "inferenceservices"]
        # the next champion: the same InferenceService, patched
        version = s3_version(registry, "ner-apply", upload(s3_bucket, tiny_model(tmp_path / "v2", cased=True), "v2"))
        _, manifests = deploy_manifests(registry, "ner-apply", config)
        apply(manifests, config, api_client=api.client(), namespace=api.namespace, poll_s=0.05)
        assert len(api.jobs("inferenceservices")) == 1
        assert api.calls("PATCH", "/inferenceservices/ner-apply")
        live = api.job("inferenceservices", "ner-apply")
        assert live["metadata"]["labels"]["kfnlp.io/model-version"] == str(version)
        assert live["spec"]["predictor"]["model"]["storageUri"] == s3_bucket.uri("v2")


def test_apply_refuses_a_missing_secret_before_any_write(s3_bucket, cased_on_s3):
    registry = Registry()
    s3_version(registry, "ner-nosecret", cased_on_s3)
    config = DeployConfig(s3_secret="absent")
    with KubeApi() as api:
        _, manifests = deploy_manifests(registry, "ner-nosecret", config)
        with pytest.raises(ConfigError, match="no Secret 'absent'"):
            apply(manifests, config, api_client=api.client(), namespace=api.namespace)
        assert api.calls("POST") == [] and api.calls("PATCH") == []


def test_a_service_that_never_gets_ready_is_one_line(s3_bucket, cased_on_s3):
    registry = Registry()
    s3_version(registry, "ner-slow", cased_on_s3)
    config = DeployConfig(s3_secret="kserve-s3", timeout="1s")
    with KubeApi() as api:
        api.add_secret("kserve-s3", {"awsAccessKeyID": "a", "awsSecretAccessKey": "b"})
        _, manifests = deploy_manifests(registry, "ner-slow", config)
        with pytest.raises(DeployError, match="not Ready after 1 s"):
            apply(manifests, config, api_client=api.client(), namespace=api.namespace, poll_s=0.05)


def test_the_pipeline_step_deploys_only_what_the_gate_promoted(s3_bucket, cased_on_s3, tmp_path):
    registry = Registry()
    s3_version(registry, "ner-step", cased_on_s3)
    registered = tmp_path / "registered.json"
    registered.write_text(json.dumps({"name": "ner-step", "version": 1}))
    rejected, promoted = tmp_path / "rejected.json", tmp_path / "promoted.json"
    rejected.write_text(json.dumps({"outcome": "rejected"}))
    promoted.write_text(json.dumps({"outcome": "promoted"}))
    config = DeployConfig(enabled=True, s3_secret="kserve-s3", timeout="20s")
    with KubeApi() as api:
        api.add_secret("kserve-s3", {"awsAccessKeyID": "a", "awsSecretAccessKey": "b"})
        connection = {"api_client": api.client(), "namespace": api.namespace, "poll_s": 0.05}
        skipped = deploy_registered(str(registered), str(rejected), config, **connection)
        assert skipped["outcome"] == "skipped" and api.calls("POST") == []
        off = deploy_registered(str(registered), str(promoted), DeployConfig(), **connection)
        assert off["outcome"] == "skipped" and api.calls("POST") == []
        thread = _ready_when_created(api, "ner-step")
        done = deploy_registered(str(registered), str(promoted), config, run_name="run-7", **connection)
        thread.join(5)
        assert done["outcome"] == "deployed" and done["name"] == "ner-step" and done["version"] == 1
        again = deploy_registered(str(registered), str(promoted), config, run_name="run-7", **connection)
        assert again["name"] == "ner-step" and len(api.jobs("inferenceservices")) == 1  # same run, same service
        assert api.job("inferenceservices", "ner-step")["metadata"]["labels"]["kfnlp.io/pipeline-run"] == "run-7"


def test_rollback_redeploys_the_previous_champion(s3_bucket, tmp_path, monkeypatch, capsys):
    registry = Registry()
    first = upload(s3_bucket, tiny_model(tmp_path / "v1", cased=True), "v1")
    second = upload(s3_bucket, tiny_model(tmp_path / "v2", cased=True), "v2")
    s3_version(registry, "ner-roll", first)
    s3_version(registry, "ner-roll", second)
    registry.client.set_registered_model_alias("ner-roll", "previous-champion", "1")
    with KubeApi() as api:
        api.add_secret("kserve-s3", {"awsAccessKeyID": "a", "awsSecretAccessKey": "b"})
        monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig(tmp_path / "kubeconfig")))
        assert main(["deploy", "ner-roll", "--apply", "--no-wait", "--s3-secret", "kserve-s3"]) == 0
        assert api.job("inferenceservices", "ner-roll")["spec"]["predictor"]["model"]["storageUri"] == second
        code = main(["registry", "rollback", "ner-roll", "--redeploy", "--no-wait", "--s3-secret", "kserve-s3"])
        assert code == 0, capsys.readouterr().err
        live = api.job("inferenceservices", "ner-roll")
        assert live["spec"]["predictor"]["model"]["storageUri"] == first
        assert live["metadata"]["labels"]["kfnlp.io/model-version"] == "1"
        assert len(api.jobs("inferenceservices")) == 1
    assert "do-not-print" not in capsys.readouterr().out


def test_the_deploy_component_applies_with_the_pods_kubeconfig(s3_bucket, cased_on_s3, tmp_path, monkeypatch):
    """The pipeline's deploy task as KFP runs it (the component's function on artifact files), reaching the
    loopback Kubernetes API through $KUBECONFIG as a pod reaches its own through the service account."""
    from kfp import dsl

    from kfnlp.components.deploy.component import deploy
    from kfnlp.config import to_json

    registry = Registry()
    s3_version(registry, "ner-task", cased_on_s3)
    registered, decision = tmp_path / "registered.json", tmp_path / "decision.json"
    registered.write_text(json.dumps({"name": "ner-task", "version": 1}))
    decision.write_text(json.dumps({"outcome": "promoted"}))
    config = DeployConfig(enabled=True, s3_secret="kserve-s3", timeout="20s")
    with KubeApi() as api:
        api.add_secret("kserve-s3", {"awsAccessKeyID": "a", "awsSecretAccessKey": "b"})
        monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig(tmp_path / "kubeconfig")))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        thread = _ready_when_created(api, "ner-task")
        deploy.python_func(
            config=to_json(config),
            register_config="{}",
            run_name="run-9",
            registered=dsl.Artifact(uri=str(registered)),
            decision=dsl.Artifact(uri=str(decision)),
            deployment=dsl.Artifact(uri=str(tmp_path / "deployment.json")),
        )
        thread.join(5)
        live = api.job("inferenceservices", "ner-task")
    result = json.loads((tmp_path / "deployment.json").read_text(encoding="utf-8"))
    assert result["outcome"] == "deployed" and result["name"] == "ner-task" and result["version"] == 1
    assert live["metadata"]["labels"]["kfnlp.io/pipeline-run"] == "run-9"
    assert live["spec"]["predictor"]["model"]["storageUri"] == cased_on_s3
