"""Concurrent registration and promotion in real processes on the embedded store.

Twenty candidate processes (separate interpreters sharing nothing but the store on
disk) each register a version of one model, all at once, then, released
together by a barrier, all run the promotion gate for their version at once.
The store starts empty, so the registrations also race to create the model and the
``kfnlp`` experiment.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import time
from pathlib import Path

from kfnlp.registry import Registry
from kfnlp.registry.promotion import CHAMPION, EVAL_TAG, PREVIOUS, PRIMARY_TAG, decisions
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
