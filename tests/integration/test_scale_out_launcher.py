"""The scale-out launcher through the real ``kubernetes`` client against a loopback stand-in of the API
(tests/support/kube_api.py: no API server can run here): it creates exactly the manifest ``manifests.build``
makes, owned by its pod; streams rank 0's log; fails with one line naming the node; re-attaches when retried;
gives up on a job that never schedules; applies the cleanup policy; for both engines."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time

import pytest

from kfnlp.errors import ScaleOutError
from kfnlp.launch.scale_out.launcher import run_job
from kfnlp.launch.scale_out.manifests import build, container_name, engine, job_name, node_command
from kfnlp.launch.scale_out.spec import ENV, ScaleOut
from tests.support.kube_api import KubeApi

STAGE = "train-mlm"
ROOT = "s3://ml/v2/artifacts/mlm-adapt/run-1"
INPUTS = {"dataset": f"{ROOT}/preprocess/dataset", "eval_set": f"{ROOT}/mask-eval/eval_set", "base_model": "builtin:x"}
OUTPUT = f"{ROOT}/train-mlm/model-job"
CONFIG = json.dumps({"max_steps": 5})
POLL = 0.05
LAUNCHER_POD = "mlm-adapt-run-1-train-mlm-launcher"
SPEC = ScaleOut(nodes=2, gpus_per_node=1, engine="trainjob", runtime="torch-distributed", image="kfnlp:test")
ENGINES = [SPEC, dataclasses.replace(SPEC, engine="pytorchjob")]
NODE_ERROR = "kfnlp: error: dataset s3://ml/x: no complete artifact (its manifest is missing)"


@pytest.fixture
def kube(monkeypatch):
    """The stand-in API with the launcher's own pod (labelled by KFP with its run) and the default runtime."""
    with KubeApi() as api:
        monkeypatch.setenv("HOSTNAME", LAUNCHER_POD)
        api.add_pod(LAUNCHER_POD, {"pipeline/runid": "run-1", "pipelines.kubeflow.org/v2_component": "true"})
        runtime = {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "ClusterTrainingRuntime"}
        api.add_object("clustertrainingruntimes", runtime | {"metadata": {"name": "torch-distributed"}}, False)
        yield api


def node_pods(api: KubeApi, spec: ScaleOut, name: str, unschedulable: str = "") -> list[str]:
    """The job's pods as the engines' controllers create and label them (JobSet's Indexed Job for a TrainJob,
    the Training Operator's master and workers for a PyTorchJob); rank 0 first."""
    pods = []
    for rank in range(spec.nodes):
        if spec.engine == "trainjob":
            pod = f"{name}-node-0-{rank}-q{rank}x7z"
            labels = {
                "jobset.sigs.k8s.io/jobset-name": name,
                "jobset.sigs.k8s.io/replicatedjob-name": "node",
                "jobset.sigs.k8s.io/job-index": "0",
                "batch.kubernetes.io/job-completion-index": str(rank),
            }
        else:
            role, index = ("master", 0) if rank == 0 else ("worker", rank - 1)
            pod = f"{name}-{role}-{index}"
            labels = {
                "training.kubeflow.org/job-name": name,
                "training.kubeflow.org/operator-name": "pytorchjob-controller",
                "training.kubeflow.org/replica-type": role,
                "training.kubeflow.org/replica-index": str(index),
            }
        api.add_pod(
            pod, labels, owner=(engine(spec).plural, name), unschedulable=unschedulable, container=container_name(spec)
        )
        pods.append(pod)
    return pods


def succeed(api: KubeApi, spec: ScaleOut, name: str) -> None:
    """Both nodes run and log; the job completes with its engine's condition."""
    pods = node_pods(api, spec, name)
    for pod in pods:
        api.run_pod(pod)
    api.log(pods[0], "rank 0: step 1/5 loss 9.1", "rank 0: step 5/5 loss 4.2")
    api.log(pods[1], "rank 1: step 5/5")
    for pod in pods:
        api.finish_pod(pod, 0)
    if spec.engine == "trainjob":
        api.set_condition(
            "trainjobs", name, "Complete", reason="JobSetCompleted", message="jobset completed successfully"
        )
    else:
        message = f"PyTorchJob {api.namespace}/{name} successfully completed."
        api.set_condition("pytorchjobs", name, "Succeeded", reason="PyTorchJobSucceeded", message=message)


def fail(api: KubeApi, spec: ScaleOut, name: str) -> None:
    """Node 1 fails with exit code 3 after its kfnlp error line; rank 0 is still running."""
    pods = node_pods(api, spec, name)
    for pod in pods:
        api.run_pod(pod)
    api.log(pods[0], "rank 0: step 1/5")
    api.log(pods[1], "[rank1]: loading the dataset", NODE_ERROR)
    api.finish_pod(pods[1], 3)
    if spec.engine == "trainjob":
        api.set_condition(
            "trainjobs", name, "Failed", reason="FailedJobs", message="jobset failed due to reaching max restarts"
        )
    else:
        message = f"PyTorchJob {api.namespace}/{name} is failed because 1 Worker replica(s) failed."
        api.set_condition("pytorchjobs", name, "Failed", reason="PyTorchJobFailed", message=message)


def launch(api: KubeApi, spec: ScaleOut, script, poll_s: float = POLL) -> None:
    """run_job in this thread while ``script(api, spec, job name)`` plays the cluster in another."""
    problems: list[BaseException] = []

    def play():
        try:
            script(api, spec, api.wait_for_job(engine(spec).plural)["metadata"]["name"])
        except BaseException as exc:  # reported by the test
            problems.append(exc)

    player = threading.Thread(target=play, daemon=True)
    player.start()
    try:
        run_job(STAGE, spec, INPUTS, OUTPUT, CONFIG, api_client=api.client(), namespace=api.namespace, poll_s=poll_s)
    finally:
        player.join(10)
        assert not problems, problems


@pytest.mark.parametrize("spec", ENGINES, ids=lambda s: s.engine)
def test_a_job_that_completes_is_exactly_the_built_manifest_owned_by_the_launcher_pod(kube, spec, capsys):
    launch(kube, spec, succeed)
    name = job_name(STAGE, OUTPUT)
    created = kube.calls("POST", engine(spec).plural)
    assert len(created) == 1
    me = kube.pods[LAUNCHER_POD]["metadata"]
    owners = [{"apiVersion": "v1", "kind": "Pod", "name": LAUNCHER_POD, "uid": me["uid"]}]
    labels = {"app.kubernetes.io/managed-by": "kfnlp", "app.kubernetes.io/component": STAGE, "pipeline/runid": "run-1"}
    command = node_command(STAGE, INPUTS, OUTPUT, CONFIG)
    assert created[0].body == build(spec, name, command, labels, owners, runtime_kind="ClusterTrainingRuntime")
    assert created[0].query.get("fieldValidation") == "Strict"  # unknown fields refused by the API server too
    err = capsys.readouterr().err
    assert f"[{STAGE} node 0] rank 0: step 1/5 loss 9.1\n[{STAGE} node 0] rank 0: step 5/5 loss 4.2\n" in err
    assert "rank 1" not in err  # only rank 0's log
    assert kube.job(engine(spec).plural, name) is None  # cleanup on-success: deleted


@pytest.mark.parametrize("spec", ENGINES, ids=lambda s: s.engine)
def test_a_failed_job_is_one_line_naming_the_node_its_exit_code_and_error(kube, spec):
    with pytest.raises(ScaleOutError) as raised:
        launch(kube, spec, fail)
    name = job_name(STAGE, OUTPUT)
    pod = f"{name}-node-0-1-q1x7z" if spec.engine == "trainjob" else f"{name}-worker-0"
    message = str(raised.value)
    assert "\n" not in message
    assert f"failed on node 1 (pod {pod}, exit code 3)" in message and message.endswith(NODE_ERROR)
    assert ("max restarts" if spec.engine == "trainjob" else "1 Worker replica(s) failed") in message
    assert kube.job(engine(spec).plural, name) is not None  # on-success keeps a failed job for kubectl describe


def test_a_retried_launcher_attaches_to_its_running_job_and_adds_itself_as_owner(kube, monkeypatch):
    name = job_name(STAGE, OUTPUT)
    first = {"apiVersion": "v1", "kind": "Pod", "name": "first-launcher", "uid": "0f1e2d3c"}
    manifest = build(SPEC, name, node_command(STAGE, INPUTS, OUTPUT, CONFIG), {}, [first])
    kube.add_object("trainjobs", manifest)
    launch(kube, dataclasses.replace(SPEC, cleanup="never"), succeed)
    assert len(kube.calls("POST", "trainjobs")) == 1  # refused with 409; no second job
    patched = kube.calls("PATCH", f"trainjobs/{name}")
    assert [o["name"] for o in patched[0].body["metadata"]["ownerReferences"]] == ["first-launcher", LAUNCHER_POD]
    assert len(kube.jobs("trainjobs")) == 1


def test_a_retried_launcher_replaces_a_job_that_already_failed(kube):
    name = job_name(STAGE, OUTPUT)
    kube.add_object("trainjobs", build(SPEC, name, ["torchrun"], {}, []))
    kube.set_condition("trainjobs", name, "Failed", reason="FailedJobs", message="jobset failed")
    old = kube.job("trainjobs", name)["metadata"]["uid"]

    def succeed_anew(api, spec, name):
        while (api.job("trainjobs", name) or {"metadata": {"uid": old}})["metadata"]["uid"] == old:
            time.sleep(POLL)
        succeed(api, spec, name)

    launch(kube, dataclasses.replace(SPEC, cleanup="never"), succeed_anew)
    assert kube.calls("DELETE", f"trainjobs/{name}") and kube.job("trainjobs", name)["metadata"]["uid"] != old


def test_a_job_that_never_schedules_fails_after_start_timeout_with_the_schedulers_message(kube):
    why = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available."
    spec = dataclasses.replace(SPEC, start_timeout_s=1, cleanup="never")
    began = time.monotonic()
    with pytest.raises(ScaleOutError) as raised:
        launch(kube, spec, lambda api, spec, name: node_pods(api, spec, name, unschedulable=why))
    assert 1 <= time.monotonic() - began < 8
    message = str(raised.value)
    assert "0 of 2 nodes running after 1 s" in message and message.endswith(why) and "deleted it" in message
    assert kube.jobs("trainjobs") == []  # deleted whatever the cleanup policy: it holds no GPU, but it would


def test_a_runtime_that_does_not_exist_fails_in_the_first_seconds(kube):
    began = time.monotonic()
    with pytest.raises(ScaleOutError, match="no training runtime 'torch-tuned'") as raised:
        run_job(
            STAGE,
            dataclasses.replace(SPEC, runtime="torch-tuned"),
            INPUTS,
            OUTPUT,
            CONFIG,
            api_client=kube.client(),
            namespace=kube.namespace,
            poll_s=POLL,
        )
    assert time.monotonic() - began < 3 and "\n" not in str(raised.value)
    assert not kube.calls("POST")


def test_a_namespaced_runtime_is_named_as_one(kube):
    runtime = {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainingRuntime", "metadata": {"name": "team"}}
    kube.add_object("trainingruntimes", runtime)
    launch(kube, dataclasses.replace(SPEC, runtime="team"), succeed)
    ref = kube.calls("POST", "trainjobs")[0].body["spec"]["runtimeRef"]
    assert ref == {"apiGroup": "trainer.kubeflow.org", "kind": "TrainingRuntime", "name": "team"}


@pytest.mark.parametrize(
    ("cleanup", "outcome", "kept"),
    [
        ("on-success", succeed, False),
        ("on-success", fail, True),
        ("always", succeed, False),
        ("always", fail, False),
        ("never", succeed, True),
        ("never", fail, True),
    ],
)
def test_cleanup_policies(kube, cleanup, outcome, kept):
    spec = dataclasses.replace(SPEC, cleanup=cleanup)
    try:
        launch(kube, spec, outcome)
    except ScaleOutError:
        assert outcome is fail
    assert (kube.job("trainjobs", job_name(STAGE, OUTPUT)) is not None) is kept


def test_a_refused_watch_falls_back_to_polling(kube, caplog):
    caplog.set_level(logging.INFO, logger="kfnlp")
    kube.refuse_watch = True
    launch(kube, SPEC, lambda api, spec, name: (time.sleep(10 * POLL), succeed(api, spec, name)))
    assert [r for r in kube.calls("GET", "trainjobs") if r.query.get("watch")]
    assert "cannot watch" in caplog.text and "polling every" in caplog.text
    assert kube.jobs("trainjobs") == []


def test_rank_zeros_log_follows_a_replaced_pod(kube, capsys):
    def restart(api, spec, name):
        pods = node_pods(api, spec, name)
        for pod in pods:
            api.run_pod(pod)
        api.log(pods[0], "first pod: step 1")
        api.finish_pod(pods[0], 137)
        time.sleep(4 * POLL)
        labels = api.pods[pods[0]]["metadata"]["labels"]
        api.delete_pod(pods[0])
        again = f"{name}-node-0-0-r2d2k"  # the Job's replacement pod for the same rank
        api.add_pod(again, labels, owner=("trainjobs", name))
        api.run_pod(again)
        api.log(again, "second pod: step 2")
        time.sleep(4 * POLL)
        api.finish_pod(again, 0)
        api.finish_pod(pods[1], 0)
        api.set_condition("trainjobs", name, "Complete", reason="JobSetCompleted", message="jobset completed")

    launch(kube, SPEC, restart)
    err = capsys.readouterr().err
    assert "node 0] first pod: step 1" in err and "node 0] second pod: step 2" in err


def test_the_train_component_exits_with_the_jobs_failure_through_its_real_entry(kube, monkeypatch, tmp_path):
    """The compiled train task's body: $KFNLP_SCALE_OUT set, the API found through $KUBECONFIG (as from a
    workstation; in a pod the service account's), the job fails: one error line and a stage failure's exit code."""
    from kfp import dsl

    from kfnlp.components.train_mlm.component import train_mlm

    monkeypatch.setenv(ENV, SPEC.to_json())
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig(tmp_path / "kubeconfig")))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    for name in ("KFNLP_STORAGE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    model = dsl.Model(uri=f"{ROOT}/train-mlm/model")
    model._set_custom_path(str(tmp_path / "outputs" / "model"))  # where KFP's launcher would collect it

    def play():
        name = kube.wait_for_job("trainjobs")["metadata"]["name"]
        fail(kube, SPEC, name)

    player = threading.Thread(target=play, daemon=True)
    player.start()
    with pytest.raises(SystemExit) as exited:
        train_mlm.python_func(
            config=json.dumps({"max_steps": 5}),
            base_model="builtin:splade-tiny",
            dataset=dsl.Dataset(uri=INPUTS["dataset"]),
            eval_set=dsl.Dataset(uri=INPUTS["eval_set"]),
            model=model,
        )
    player.join(10)
    assert exited.value.code == ScaleOutError.exit_code != 0
    error = json.loads((tmp_path / "outputs" / "kfnlp-error.json").read_text())  # what `kfnlp run` reports
    assert error["type"] == "ScaleOutError" and error["stage"] == STAGE
    assert error["error"].startswith("TrainJob kfnlp-train-mlm-") and error["error"].endswith(NODE_ERROR)
    created = kube.calls("POST", "trainjobs")[0].body
    command = created["spec"]["trainer"]["command"]
    assert command[command.index("--output") + 1] == f"{ROOT}/train-mlm/model-job"
    sent = json.loads(command[command.index("--config-json") + 1])
    assert sent["max_steps"] == 5 and sent["checkpoint_dir"] == f"{ROOT}/train-mlm/model-checkpoints"
