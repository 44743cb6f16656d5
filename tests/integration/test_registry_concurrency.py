"""Concurrent registration and promotion in real processes: on the embedded store (its first use
by several processes at once included) and from separate "hosts" (own KFNLP_HOME each) against
the loopback MLflow server.

Twenty candidate processes (separate interpreters sharing nothing but the store on
disk) each register a version of one model, all at once, then, released
together by a barrier, all run the promotion gate for their version at once.
The store starts empty, so the registrations also race to create the model and the
``kfnlp`` experiment.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from kfnlp.registry import Registry
from kfnlp.registry.promotion import CHAMPION, EVAL_TAG, PREVIOUS, PRIMARY_TAG, PromoteConfig, decisions, promote
from tests.integration.test_promotion import fresh_store

CANDIDATES = 20
NAME = "contested"
EVAL = "c" * 64
BARRIER_TIMEOUT = 120.0
# Candidates fork from multiprocessing's fork server: a fresh, single-threaded
# interpreter (not this pytest process, nor any open database connection) that has
# imported these once. Spawned interpreters would import MLflow twenty times over,
# about a minute of CPU on a small machine; the processes are just as separate.
PRELOAD = [
    "mlflow",
    "mlflow.tracking",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "kfnlp.registry",
    "kfnlp.registry.promotion",
    __name__,
]


def _candidate(uri: str, model_dir: str, f1: float, barrier, out: str) -> None:
    """One candidate process: register (together with the others), then promote
    (together with the others). Writes what happened to ``out`` as JSON."""
    from kfnlp.registry.promotion import PromoteConfig, promote

    result: dict = {"f1": f1}
    registry = Registry(uri)
    registry.client.search_registered_models()  # connect before the start line
    barrier.wait(BARRIER_TIMEOUT)
    try:
        entry = registry.register(
            NAME,
            Path(model_dir),
            metrics={"f1": f1, "recall": f1 / 2},
            params={"candidate_f1": f1},
            tags={EVAL_TAG: EVAL, PRIMARY_TAG: "f1", "kfnlp.task": "ner"},
            files={},
        )
        result["version"] = entry["version"]
    except Exception as exc:  # reported by the parent, which asserts there is none
        result["register_error"] = f"{type(exc).__name__}: {exc}"
    barrier.wait(BARRIER_TIMEOUT)  # every version is registered (or failed) before any promotion
    if "version" in result:
        result["start"] = time.time()
        try:
            decision = promote(registry, NAME, result["version"], PromoteConfig())
            result.update(outcome=decision.outcome, sequence=decision.sequence)
        except Exception as exc:
            result["promote_error"] = f"{type(exc).__name__}: {exc}"
        result["end"] = time.time()
    Path(out).write_text(json.dumps(result))


def test_twenty_concurrent_candidates_leave_one_consistent_champion(tmp_path, kfnlp_home, tmp_path_factory):
    """Twenty processes register, then promote, one version each, at the same time.

    Why the final champion must be the version with the best F1 whatever the order
    the lock grants: decisions are serialized, so the champion's F1 only ever goes up
    (a version is promoted only when strictly better than the current champion, and
    the first decision promotes whoever comes first). The F1 values are distinct, so
    when the best version's turn comes the champion is some other version with a
    lower F1 and the best one is promoted; after that no version is strictly better,
    so every later candidate is rejected. Hence the champion is the max-F1 version,
    and @previous-champion is the champion the last promotion replaced (None, and no
    alias, if the best version happened to go first). Without serialization two
    processes could both read the same champion and both move the aliases, which
    the chain check below (each decision starts from the champion the previous one
    left) would catch, as would a duplicated or missing sequence number.
    """
    fresh_store(kfnlp_home, tmp_path_factory.getbasetemp())
    registry = Registry()
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    scores = [round(0.50 + 0.02 * i, 4) for i in range(CANDIDATES)]
    random.Random(7).shuffle(scores)  # start order (and so version numbers) unrelated to F1

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    barrier = context.Barrier(CANDIDATES)
    outs = [tmp_path / f"candidate-{i}.json" for i in range(CANDIDATES)]
    processes = [
        context.Process(target=_candidate, args=(registry.uri, str(model_dir), f1, barrier, str(out)))
        for f1, out in zip(scores, outs, strict=True)
    ]
    started = time.monotonic()
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=max(1.0, 180 - (time.monotonic() - started)))
    alive = [p.pid for p in processes if p.is_alive()]
    for process in processes:
        if process.is_alive():
            process.kill()
    assert not alive, f"candidate processes still running after 180 s: {alive}"
    assert [p.exitcode for p in processes] == [0] * CANDIDATES

    results = [json.loads(out.read_text()) for out in outs]
    register_errors = [r["register_error"] for r in results if "register_error" in r]
    assert not register_errors, register_errors
    promote_errors = [r["promote_error"] for r in results if "promote_error" in r]
    assert not promote_errors, promote_errors
    f1_of = {r["version"]: r["f1"] for r in results}
    assert sorted(f1_of) == list(range(1, CANDIDATES + 1)), "each process got its own version number"

    # really concurrent: several promotions had started before the first one finished
    first_end = min(r["end"] for r in results)
    assert sum(r["start"] < first_end for r in results) >= 2

    # no version lost, each with its own metrics and its latest decision
    versions = registry.versions(NAME)
    assert [int(v.version) for v in versions] == list(range(1, CANDIDATES + 1))
    for version in versions:
        assert registry.client.get_run(version.run_id).data.metrics["f1"] == f1_of[int(version.version)]
        assert version.tags["kfnlp.decision"] in ("promoted", "rejected")

    # the trail: twenty decisions, numbered 1..20, one per version, as each process saw it
    trail = decisions(registry, NAME)
    assert [d["sequence"] for d in trail] == list(range(1, CANDIDATES + 1))
    assert sorted(d["version"] for d in trail) == list(range(1, CANDIDATES + 1))
    assert {d["version"]: (d["sequence"], d["outcome"]) for d in trail} == {
        r["version"]: (r["sequence"], r["outcome"]) for r in results
    }

    # a consistent chain: each decision starts from the champion the previous one left
    champion = None
    for d in trail:
        assert d["champion_before"] == champion, (d["sequence"], d["champion_before"], champion)
        if champion is None:
            assert (d["outcome"], d["champion_after"]) == ("promoted", d["version"])
        else:
            assert d["champion"]["f1"] == f1_of[champion]
            assert d["candidate"]["f1"] == f1_of[d["version"]]
            better = f1_of[d["version"]] > f1_of[champion]
            assert d["outcome"] == ("promoted" if better else "rejected"), d
            assert d["champion_after"] == (d["version"] if better else champion)
        champion = d["champion_after"]

    best = max(f1_of, key=f1_of.get)
    promoted = [d for d in trail if d["outcome"] == "promoted"]
    aliases = {alias: int(v) for alias, v in registry.get_model(NAME).aliases.items()}
    assert champion == best
    assert aliases[CHAMPION] == best, "exactly one @champion, the best F1"
    assert aliases.get(PREVIOUS) == promoted[-1]["champion_before"]
    assert set(aliases) <= {CHAMPION, PREVIOUS}


# --- first use of a fresh embedded store ------------------------------------------------------------

FIRST_USERS = 8


def _first_use(home: str, model_dir: str, f1: float, barrier, out: str) -> None:
    """Open the default embedded store of ``home`` (which does not exist yet) and register a
    version, at the same moment as the others."""
    os.environ["KFNLP_HOME"] = home
    barrier.wait(BARRIER_TIMEOUT)
    try:
        entry = Registry().register("fresh", Path(model_dir), metrics={"f1": f1}, params={}, tags={}, files={})
        result = {"version": entry["version"]}
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"}
    Path(out).write_text(json.dumps(result))


def run_processes(target, args_list: list[tuple], timeout: float = 180) -> None:
    """Start one forkserver process per argument tuple; all must end with exit code 0 within ``timeout``."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    processes = [context.Process(target=target, args=args) for args in args_list]
    started = time.monotonic()
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=max(1.0, timeout - (time.monotonic() - started)))
    alive = [p.pid for p in processes if p.is_alive()]
    for process in processes:
        if process.is_alive():
            process.kill()
    assert not alive, f"processes still running after {timeout:.0f} s: {alive}"
    assert [p.exitcode for p in processes] == [0] * len(processes)


def test_eight_processes_creating_a_fresh_store_at_once_all_register(tmp_path, kfnlp_home):
    """Eight processes' first use of an embedded store that does not exist yet: one creates it (the
    MLflow schema migrations), the others wait for it, and every registration lands."""
    assert not (kfnlp_home / "registry").exists()
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    barrier = multiprocessing.get_context("forkserver").Barrier(FIRST_USERS)
    outs = [tmp_path / f"first-{i}.json" for i in range(FIRST_USERS)]
    run_processes(
        _first_use, [(str(kfnlp_home), str(model_dir), i / 10, barrier, str(out)) for i, out in enumerate(outs)]
    )

    results = [json.loads(out.read_text()) for out in outs]
    assert [r.get("error") for r in results] == [None] * FIRST_USERS
    assert sorted(r["version"] for r in results) == list(range(1, FIRST_USERS + 1))
    assert [int(v.version) for v in Registry().versions("fresh")] == list(range(1, FIRST_USERS + 1))
    leftovers = sorted(p.name for p in (kfnlp_home / "registry").iterdir() if p.name.startswith("."))
    assert leftovers == [], "no half-made stores left behind"


def test_a_store_creation_killed_midway_leaves_no_half_made_store(tmp_path, kfnlp_home):
    """A process killed while it creates the store (mid-migration) must not leave a database that
    looks like a store: the next user creates a complete one."""
    registry_dir = kfnlp_home / "registry"
    creator = subprocess.Popen(
        [sys.executable, "-c", "from kfnlp.registry import Registry; Registry().models()"],
        env={**os.environ, "KFNLP_HOME": str(kfnlp_home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and creator.poll() is None:
            if registry_dir.is_dir() and any(p.stat().st_size > 0 for p in registry_dir.iterdir() if p.is_file()):
                break  # the schema is being written
            time.sleep(0.02)
    finally:
        creator.kill()
        creator.wait()
    assert not (registry_dir / "mlflow.db").exists(), "a store whose creation was killed midway looks usable"

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    registered = Registry().register("after-crash", model_dir, metrics={"f1": 0.5}, params={}, tags={}, files={})
    assert registered["version"] == 1
    assert [p.name for p in registry_dir.iterdir() if p.name.startswith(".")] == [], "the killed attempt is cleared"


# --- promotions from several hosts against one server -----------------------------------------------


def _promoter(uri: str, home: str, name: str, version: int, delay: float, barrier, out: str) -> None:
    """One pipeline pod: its own KFNLP_HOME (so no shared lock file), the shared server.

    ``delay`` is slept between reading the champion and moving the aliases (around the real gate),
    which makes the race between two pods certain instead of a matter of luck."""
    os.environ["KFNLP_HOME"] = home
    from kfnlp.registry import promotion

    gate = promotion.evaluate_gate

    def slow_gate(*args):
        time.sleep(delay)
        return gate(*args)

    promotion.evaluate_gate = slow_gate
    registry = Registry(uri)
    registry.get_model(name)  # connected before the start line
    barrier.wait(BARRIER_TIMEOUT)
    try:
        decision = promotion.promote(registry, name, version, promotion.PromoteConfig())
        result = {"outcome": decision.outcome, "champion_before": decision.champion_before}
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"}
    Path(out).write_text(json.dumps(result))


@pytest.mark.parametrize(
    "better_delay, worse_delay", [(0.2, 1.5), (1.5, 0.2), (1.0, 1.0)], ids=["worse-last", "better-last", "together"]
)
def test_promotions_from_separate_hosts_leave_the_better_champion(mlflow_server, tmp_path, better_delay, worse_delay):
    """Two pods promote v2 (F1 0.90) and v3 (F1 0.85) over champion v1 (F1 0.80) at once against
    one MLflow server. Serialised, the first decision sees v1 and the second sees the first's
    outcome, so the better version ends as champion whichever goes first, and the trail holds
    all three decisions as one chain."""
    uri = mlflow_server.uri
    name = f"hosts-{uuid.uuid4().hex[:8]}"
    registry = Registry(uri)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    f1_of = {1: 0.80, 2: 0.90, 3: 0.85}
    for f1 in f1_of.values():
        registry.register(
            name,
            model_dir,
            metrics={"f1": f1},
            params={},
            tags={EVAL_TAG: EVAL, PRIMARY_TAG: "f1", "kfnlp.task": "ner"},
            files={},
        )
    assert promote(registry, name, 1, PromoteConfig()).outcome == "promoted"

    barrier = multiprocessing.get_context("forkserver").Barrier(2)
    outs = {2: tmp_path / "pod-v2.json", 3: tmp_path / "pod-v3.json"}
    delays = {2: better_delay, 3: worse_delay}
    run_processes(
        _promoter,
        [(uri, str(tmp_path / f"home-v{v}"), name, v, delays[v], barrier, str(outs[v])) for v in (2, 3)],
    )
    results = {v: json.loads(out.read_text()) for v, out in outs.items()}
    assert [r.get("error") for r in results.values()] == [None, None]

    aliases = {alias: int(v) for alias, v in Registry(uri).get_model(name).aliases.items()}
    assert aliases[CHAMPION] == 2, (aliases, results)
    trail = decisions(Registry(uri), name)
    assert sorted(d["version"] for d in trail) == [1, 2, 3], "every decision is in the trail"
    champion = None
    for d in trail:
        assert d["champion_before"] == champion, trail
        champion = d["champion_after"]
    assert champion == 2
    assert [d["sequence"] for d in trail] == [1, 2, 3]
    assert len({d["id"] for d in trail}) == 3, "each decision has its own id"
    assert aliases[PREVIOUS] == [d for d in trail if d["outcome"] == "promoted"][-1]["champion_before"]


def test_a_dead_promotions_lease_expires(mlflow_server, tmp_path, monkeypatch):
    """A pod killed while it holds the registry lease does not block the model for ever: its ticket
    is taken for dead after LEASE_SECONDS and the next promotion goes ahead."""
    from kfnlp.registry import lock

    uri = mlflow_server.uri
    name = f"dead-{uuid.uuid4().hex[:8]}"
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    registry = Registry(uri)
    registry.register(name, model_dir, metrics={"f1": 0.5}, params={}, tags={}, files={})
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from kfnlp.registry import Registry\n"
            "from kfnlp.registry.lock import model_lock\n"
            "with model_lock(Registry(sys.argv[1]), sys.argv[2]):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(600)\n",
            uri,
            name,
        ],
        env={**os.environ, "KFNLP_HOME": str(tmp_path / "holder-home")},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
    finally:
        holder.kill()
        holder.wait()

    monkeypatch.setattr(lock, "LEASE_SECONDS", 3.0)
    started = time.monotonic()
    assert promote(registry, name, 1, PromoteConfig()).outcome == "promoted"
    assert 3.0 <= time.monotonic() - started < 60
    assert registry.client.search_model_versions(f"name='{lock.LOCK_MODEL_PREFIX}{name}'") == [], "no ticket left"
    assert name in [m.name for m in registry.models()] and not any(
        m.name.startswith(lock.LOCK_MODEL_PREFIX) for m in registry.models()
    ), "lease holders are not listed as models"
