"""Several nodes for real, on CPU: the command and environment a scale-out TrainJob gives each node
(read out of the manifest kfnlp.launch.scale_out builds), run as 2 "nodes" x 2 processes on loopback:
torchrun with the PET_* variables the torch-distributed runtime injects (and nothing else, so torchrun's
default rendezvous: ``static``, over a c10d TCPStore that node 0 serves at PET_MASTER_ADDR:PORT), gloo,
the stage's inputs read from and its model written to the loopback S3 server. Each node has its own
TMPDIR, HOME and kfnlp home, so the nodes share no disk, only S3, as the pods of a job do. Slow (about
3 minutes on 2 shared cores): four runs of four workers each."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kfnlp.config import to_json
from kfnlp.stages.train_mlm import TrainMlmConfig
from tests.support.loopback import free_port
from tests.support.processes import kill_tree

pytestmark = pytest.mark.slow

MODEL = "builtin:splade-tiny"
NODES, PER_NODE = 2, 2
BATCH = 4  # per process
CHUNKS = 192  # of the tiny dataset's training chunks
GLOBAL_BATCH = NODES * PER_NODE * BATCH
STEPS = math.ceil(CHUNKS / GLOBAL_BATCH)  # 12
SAVE_STEPS = 4  # checkpoints at steps 4 and 8 (not 12: the final model makes that one redundant)
S3_SECRET = "kfnlp-s3"
RUN_TIMEOUT = 600


def config(model: str) -> TrainMlmConfig:
    """The stage's config as the launcher pod passes it on (``in_pod.train_stage``: checkpoints next
    to the model artifact on S3)."""
    return TrainMlmConfig(
        learning_rate=5e-4,
        batch_size=BATCH,
        num_epochs=1,
        max_train_chunks=CHUNKS,
        eval_strategy="no",
        logging_steps=4,
        save_steps=SAVE_STEPS,
        checkpoint_dir=f"{model}-checkpoints",
    )


def trainer_spec(inputs: dict[str, str], model: str) -> dict:
    """``spec.trainer`` of the TrainJob a launcher creates for train-mlm with ``cluster.train`` 2 nodes x
    2 GPUs, writing ``<model>-job`` (as ``in_pod.train_stage`` asks it to)."""
    from kfnlp import stages
    from kfnlp.launch.cluster.compile import scale_out_spec
    from kfnlp.launch.cluster.settings import load_cluster
    from kfnlp.launch.scale_out import manifests

    cluster = load_cluster(
        {"pipeline_root": "s3://pipelines/root", "s3_secret": S3_SECRET, "train": {"nodes": NODES, "gpus": PER_NODE}},
        image="registry.example/kfnlp@sha256:" + "0" * 64,
    )
    entry = stages.get("train-mlm")
    spec = scale_out_spec(cluster, entry)
    output = f"{model}-job"
    command = manifests.node_command(entry.name, {**inputs, "base_model": MODEL}, output, to_json(config(model)))
    manifest = manifests.build(spec, manifests.job_name(entry.name, output), command, {"kfnlp-stage": entry.name}, [])
    assert manifest["kind"] == "TrainJob"
    return manifest["spec"]["trainer"]


def resolve_env(entries: list[dict], secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """What the kubelet makes of ``env``: values, or the keys of the named Secrets (optional ones may be absent)."""
    env = {}
    for entry in entries:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
            continue
        ref = entry["valueFrom"]["secretKeyRef"]
        value = secrets.get(ref["name"], {}).get(ref["key"])
        assert value is not None or ref.get("optional"), f"no key {ref['key']} in secret {ref['name']}"
        if value is not None:
            env[entry["name"]] = value
    return env


class Job:
    """One run of a job's nodes: each a torchrun process, as the runtime starts it in each pod."""

    def __init__(self, root: Path, trainer: dict, secrets: dict[str, dict[str, str]], nodes: int, per_node: int):
        self.root = root
        port = free_port()
        self.processes: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        (root / "logs").mkdir(parents=True, exist_ok=True)
        for node in range(nodes):
            disk = root / f"node-{node}"
            for name in ("tmp", "home", "kfnlp-home", "cache"):
                (disk / name).mkdir(parents=True, exist_ok=True)
            env = {
                # what the image provides (the venv's bin first: `torchrun` resolves to its torchrun)
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                "LANG": "C.UTF-8",
                "HOME": str(disk / "home"),
                "TMPDIR": str(disk / "tmp"),
                "KFNLP_HOME": str(disk / "kfnlp-home"),
                "XDG_CACHE_HOME": str(disk / "cache"),
                "HF_HOME": str(disk / "cache" / "huggingface"),
                "HF_HUB_OFFLINE": "1",
                "HF_DATASETS_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false",
                "OMP_NUM_THREADS": "1",
                **resolve_env(trainer.get("env", []), secrets),
                # what the torch-distributed runtime injects
                "PET_NNODES": str(nodes),
                "PET_NPROC_PER_NODE": str(per_node),
                "PET_NODE_RANK": str(node),
                "PET_MASTER_ADDR": "127.0.0.1",
                "PET_MASTER_PORT": str(port),
            }
            log = root / "logs" / f"node-{node}.log"
            self.logs.append(log)
            with open(log, "w") as stderr:
                self.processes.append(
                    subprocess.Popen(
                        trainer["command"],
                        env=env,
                        cwd=disk / "home",
                        stdout=subprocess.PIPE,
                        stderr=stderr,
                        text=True,
                        start_new_session=True,
                    )
                )

    def wait(self, timeout: float = RUN_TIMEOUT) -> list[str]:
        """What each node printed: every process's result as JSON (their writes may interleave)."""
        deadline = time.monotonic() + timeout
        try:
            outputs = [p.communicate(timeout=max(deadline - time.monotonic(), 1))[0] for p in self.processes]
        finally:
            self.kill()
        codes = [p.returncode for p in self.processes]
        assert codes == [0] * len(codes), f"exit codes {codes}\n{self.stderr()}"
        return outputs

    def stderr(self, tail: int = 3000) -> str:
        return "\n".join(f"--- node {i}:\n{log.read_text(errors='replace')[-tail:]}" for i, log in enumerate(self.logs))

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                kill_tree(process.pid)
                process.wait(30)

    def files(self, node: int) -> list[str]:
        """The files on a node's disk, but for the verified cache of the inputs it read from S3."""
        disk = self.root / f"node-{node}"
        cache = disk / "kfnlp-home" / "cache" / "s3"
        return sorted(str(p.relative_to(disk)) for p in disk.rglob("*") if p.is_file() and cache not in p.parents)


@pytest.fixture(scope="module")
def s3(s3_server):
    """A bucket for this module and the Secret a cluster would hold for it; the same AWS environment
    is set in this process (to upload the inputs and read the models through kfnlp.storage)."""
    from tests.support.s3_server import S3Bucket

    s3_server.start()
    bucket = S3Bucket(s3_server, s3_server.create_bucket())
    env = s3_server.env()
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith(("AWS_", "KFNLP_S3_")):
                patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION")
        yield bucket, {S3_SECRET: {key: env[key] for key in keys}}


def upload(local: Path, uri: str) -> str:
    """Copy a local artifact to S3 as it is (same files, same manifest facts)."""
    from kfnlp.storage import read_manifest, write_artifact

    manifest = read_manifest(local)
    with write_artifact(uri, manifest["kind"]) as out:
        for entry in manifest["files"]:
            (out.path / entry["path"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(local / entry["path"], out.path / entry["path"])
        out.info.update({k: v for k, v in manifest.items() if k not in ("format", "kind", "created", "files")})
    return uri


@pytest.fixture(scope="module")
def inputs(s3, tiny_dataset, tiny_eval_set) -> dict[str, str]:
    bucket, _ = s3
    return {
        "dataset": upload(tiny_dataset, bucket.uri("inputs/dataset")),
        "eval_set": upload(tiny_eval_set, bucket.uri("inputs/eval-set")),
    }


def train_losses(printed: str) -> set[float]:
    """The train_loss of each result a node's processes printed (a training summary has one)."""
    return {float(value) for value in re.findall(r'^    "train_loss": ([-+.e0-9]+),$', printed, re.M)}


def manifest(uri: str) -> dict:
    from kfnlp.storage import read_any_manifest

    return read_any_manifest(uri, kind="model")


def weights(uri: str) -> dict:
    from safetensors.torch import load_file

    from kfnlp.storage import open_artifact

    path, _ = open_artifact(uri, kind="model")
    return load_file(str(path / "model.safetensors"))


def checkpoint_steps(bucket, model: str) -> list[int]:
    """The complete checkpoints on S3 (a step's manifest is written last)."""
    prefix = model.split("/", 3)[3] + "-checkpoints/"
    found = (re.search(r"/step-(\d{9})/kfnlp-manifest\.json$", key) for key in bucket.keys(prefix))
    return sorted(int(m.group(1)) for m in found if m)


@pytest.fixture(scope="module")
def two_nodes(s3, inputs, tmp_path_factory):
    """The uninterrupted 2 x 2 run: its job, what every process printed, the model's URI."""
    bucket, secrets = s3
    model = bucket.uri("models/two-nodes")
    job = Job(tmp_path_factory.mktemp("two-nodes"), trainer_spec(inputs, model), secrets, NODES, PER_NODE)
    return job, job.wait(), model


def test_two_nodes_train_from_s3_and_only_rank_zero_writes(s3, two_nodes):
    bucket, _ = s3
    job, printed, model = two_nodes
    training = manifest(f"{model}-job")["training"]
    assert training["world_size"] == NODES * PER_NODE and training["global_batch_size"] == GLOBAL_BATCH
    assert training["global_step"] == STEPS and training["checkpoints_saved"] == 2
    # rank 0 printed the model's manifest; every other process only its training summary
    assert '"task": "mlm"' in printed[0] and '"task"' not in printed[1]
    # the summary's train_loss is the mean over all processes: the same number in every process
    assert train_losses(printed[0]) == train_losses(printed[1]) == {training["train_loss"]}
    # S3 holds the inputs and the one model rank 0 wrote; its checkpoints went once the model was stored
    written = {key.split("/.v/")[0].removesuffix("/kfnlp-manifest.json") for key in bucket.keys("")}
    assert written == {"inputs/dataset", "inputs/eval-set", "models/two-nodes-job"}
    # no node keeps anything but its cache of the inputs: not node 1's RNG states of the checkpoints
    # (gathered to rank 0, which committed them), nor the Trainer's scratch
    assert job.files(0) == job.files(1) == []


def test_two_nodes_match_one_node_with_the_same_global_batch(s3, inputs, two_nodes, tmp_path):
    """The same command on 1 node x 4 processes: same per-process batch, seed and global ranks, so each
    rank trains on the same shard with the same masks (seed + rank). Tolerance: none, the weights are
    equal bit for bit (measured so). The one thing the topology could change is the order in which the
    gradients' allreduce adds the ranks' values (float sums are not associative); gloo's ring orders its
    additions by rank, not by host, so 2 x 2 and 1 x 4 add alike. (NCCL on GPUs picks rings and trees by
    the topology: there, expect differences of float rounding per step, not here.)"""
    bucket, secrets = s3
    _, _, model = two_nodes
    one_node = bucket.uri("models/one-node")
    Job(tmp_path, trainer_spec(inputs, one_node), secrets, 1, NODES * PER_NODE).wait()
    single, multi = manifest(f"{one_node}-job")["training"], manifest(f"{model}-job")["training"]
    assert single["world_size"] == multi["world_size"] and single["global_batch_size"] == multi["global_batch_size"]
    assert single["losses"] == multi["losses"] and single["train_loss"] == multi["train_loss"]
    a, b = weights(f"{model}-job"), weights(f"{one_node}-job")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_a_killed_node_fails_the_job_and_a_rerun_resumes_from_the_last_checkpoint(s3, inputs, two_nodes, tmp_path):
    """Node 1's pod ends (every process at once) after the first checkpoint is on S3: both nodes'
    torchruns exit non-zero, rank 0 commits no model. Both nodes started again on empty disks (new
    pods) resume from the newest checkpoint on S3, and end with the same weights as the
    uninterrupted run, bit for bit: same topology, so the same allreduce order, and the checkpoint
    holds every worker's RNG state (dropout), the collator draws masks from the step."""
    bucket, secrets = s3
    _, _, uninterrupted = two_nodes
    model = bucket.uri("models/killed")
    trainer = trainer_spec(inputs, model)
    first = Job(tmp_path / "first", trainer, secrets, NODES, PER_NODE)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while not checkpoint_steps(bucket, model):
            assert all(p.poll() is None for p in first.processes), f"a node ended early\n{first.stderr()}"
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.2)
        kill_tree(first.processes[1].pid)
        killed = time.monotonic()
        codes = [p.wait(timeout=120) for p in first.processes]
        failed_after = time.monotonic() - killed
    finally:
        first.kill()
    # node 0's workers see gloo's connection to node 1 reset and fail; its torchrun ends their peers (measured: 5 s)
    assert codes[0] != 0 and codes[1] != 0 and failed_after < 60, (codes, failed_after, first.stderr())
    assert "Connection" in first.logs[0].read_text()
    assert bucket.keys("models/killed-job/") == []  # no model, not even a partial upload
    steps = checkpoint_steps(bucket, model)
    assert steps and steps[-1] < STEPS

    again = Job(tmp_path / "again", trainer, secrets, NODES, PER_NODE)
    printed = again.wait()
    resumed = {int(step) for step in re.findall(r'^    "resumed_from_step": (\w+),$', "".join(printed), re.M)}
    assert resumed == {steps[-1]}  # in every process's training summary
    assert manifest(f"{model}-job")["training"]["resumed_from_step"] == steps[-1]
    assert f"resuming from {model}-checkpoints/" in again.logs[0].read_text()
    a, b = weights(f"{uninterrupted}-job"), weights(f"{model}-job")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_the_launcher_pod_runs_the_job_and_hands_rank_zeros_model_to_kfp(s3, inputs, tmp_path, monkeypatch):
    """The compiled train task end to end, Kubernetes aside: the train component's body with
    $KFNLP_SCALE_OUT (2 nodes x 1) creates the TrainJob through the real ``kubernetes`` client, against
    the loopback stand-in of the API (no API server can run here). The test plays the cluster: it runs
    the nodes from the created manifest (command and env, as above), then marks the job Complete. The
    launcher copies the model rank 0 wrote into the KFP output path, verified, and removes the nodes'
    copy and the checkpoints from S3."""
    from kfp import dsl

    from kfnlp import stages
    from kfnlp.components.train_mlm.component import train_mlm
    from kfnlp.launch.cluster.compile import scale_out_spec
    from kfnlp.launch.cluster.settings import load_cluster
    from kfnlp.launch.scale_out.spec import ENV
    from kfnlp.storage import read_manifest
    from tests.integration.test_scale_out_launcher import LAUNCHER_POD, node_pods
    from tests.support.kube_api import KubeApi

    bucket, secrets = s3
    cluster = load_cluster(
        {"pipeline_root": "s3://pipelines/root", "s3_secret": S3_SECRET, "train": {"nodes": NODES, "gpus": 1}},
        image="registry.example/kfnlp@sha256:" + "0" * 64,
    )
    spec = scale_out_spec(cluster, stages.get("train-mlm"))
    model = dsl.Model(uri=bucket.uri("runs/run-1/train-mlm/model"))
    model._set_custom_path(str(tmp_path / "outputs" / "model"))  # where KFP's launcher collects the output
    step_config = {"batch_size": BATCH, "max_steps": 3, "eval_strategy": "no", "save_steps": 2, "learning_rate": 5e-4}
    with KubeApi() as kube:
        kube.add_pod(LAUNCHER_POD, {"pipeline/runid": "run-1"})
        runtime = {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "ClusterTrainingRuntime"}
        kube.add_object("clustertrainingruntimes", runtime | {"metadata": {"name": "torch-distributed"}}, False)
        monkeypatch.setenv(ENV, spec.to_json())
        monkeypatch.setenv("HOSTNAME", LAUNCHER_POD)
        monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig(tmp_path / "kubeconfig")))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        monkeypatch.delenv("KFNLP_STORAGE", raising=False)
        problems: list[BaseException] = []

        def cluster_plays() -> None:
            name = ""
            try:
                created = kube.wait_for_job("trainjobs", timeout=120)
                name = created["metadata"]["name"]
                pods = node_pods(kube, spec, name)
                for pod in pods:
                    kube.run_pod(pod)
                job = Job(tmp_path / "nodes", created["spec"]["trainer"], secrets, NODES, 1)
                job.wait()
                kube.log(pods[0], *job.logs[0].read_text(errors="replace").splitlines()[-3:])
                for pod in pods:
                    kube.finish_pod(pod, 0)
                kube.set_condition("trainjobs", name, "Complete", reason="JobSetCompleted", message="done")
            except BaseException as exc:  # reported by the test
                problems.append(exc)
                if name:  # the launcher stops waiting
                    kube.set_condition("trainjobs", name, "Failed", reason="TestFailed", message=repr(exc))

        player = threading.Thread(target=cluster_plays, daemon=True)
        player.start()
        train_mlm.python_func(
            config=to_json(TrainMlmConfig(**step_config)),
            base_model=MODEL,
            dataset=dsl.Dataset(uri=inputs["dataset"]),
            eval_set=dsl.Dataset(uri=inputs["eval_set"]),
            model=model,
        )
        player.join(30)
    assert not problems, problems
    handed = read_manifest(Path(model.path))  # verified against its files when it was fetched
    assert handed["kind"] == "model" and handed["training"]["world_size"] == NODES
    assert handed["training"]["global_step"] == 3
    assert bucket.keys("runs/run-1/train-mlm/") == []  # the nodes' copy and the checkpoints are gone
