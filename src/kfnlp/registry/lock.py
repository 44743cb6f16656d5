"""Exclusive decisions about one model, across processes and hosts.

MLflow moves aliases last-writer-wins and has no compare-and-set, so two promotions that both
read the champion and then both move the aliases would each decide against a champion that is no
longer there. Every decision therefore holds two locks:

- a file lock on this host (keyed by the normalised registry URI and the model name), so the
  processes of one host queue locally instead of polling the registry;
- a lease in the registry itself, which every host sees. MLflow numbers the versions of a
  registered model atomically (the database allots each number once), so each contender creates
  a version of a lock model (``kfnlp-promotion-lock.NAME``) as its ticket; the lowest live ticket
  holds the lease and deletes its ticket when done (deleted numbers are never reused). A ticket
  that stays the lowest for ``LEASE_SECONDS`` belongs to a promotion that died, and is deleted by
  whoever is waiting behind it. A holder checks its ticket still stands before moving aliases.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from kfnlp.assets import kfnlp_home
from kfnlp.errors import RegistryError
from kfnlp.registry.store import LOCK_MODEL_PREFIX, SQLITE, normalise_uri

log = logging.getLogger(__name__)

LEASE_SECONDS = 120.0  # a ticket that holds the lease longer than this is taken for a dead promotion's
POLL_SECONDS = 0.2
TICKET_SOURCE = "kfnlp-lock:/promotion"  # a version needs a source; a ticket has no files


def lock_file(tracking_uri: str, name: str) -> Path:
    """This host's lock file for decisions about ``name`` in the registry at ``tracking_uri``."""
    uri = normalise_uri(tracking_uri)
    where = Path(uri[len(SQLITE) :]).parent / "locks" if uri.startswith(SQLITE) else kfnlp_home() / "locks"
    key = hashlib.sha256(f"{uri}\0{name}".encode()).hexdigest()[:24]
    return where / f"{key}.lock"


@contextlib.contextmanager
def model_lock(registry, name: str, timeout: float = 600.0) -> Iterator[Callable[[], None]]:
    """Exclusive right to decide about ``name`` (which must exist) in ``registry``.

    Yields a check to call right before moving aliases: it raises if the lease was lost."""
    registry.get_model(name)
    deadline = time.monotonic() + timeout
    with _host_lock(lock_file(registry.uri, name), name, deadline), _lease(registry, name, deadline) as check:
        yield check


@contextlib.contextmanager
def _host_lock(path: Path, name: str, deadline: float) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RegistryError(
                        f"model {name!r}: another promotion on this host held the lock too long"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _lease(registry, name: str, deadline: float) -> Iterator[Callable[[], None]]:
    client, lock = registry.client, LOCK_MODEL_PREFIX + name
    ticket = _take_ticket(client, lock, name)
    try:
        head, since = None, 0.0
        while True:
            ahead = sorted(int(v.version) for v in client.search_model_versions(f"name='{lock}'"))
            ahead = [number for number in ahead if number < ticket]
            if not ahead:
                break
            now = time.monotonic()
            if ahead[0] != head:
                head, since = ahead[0], now
            elif now - since > LEASE_SECONDS:
                log.warning(
                    "model %r: promotion ticket %d held the lease over %.0f s; taken for dead",
                    name,
                    head,
                    LEASE_SECONDS,
                )
                _drop_ticket(client, lock, head)
                continue
            if now > deadline:
                raise RegistryError(
                    f"model {name!r}: other promotions held the registry lease too long (ticket {head})"
                )
            time.sleep(POLL_SECONDS)

        def check() -> None:
            from mlflow.exceptions import MlflowException

            try:
                client.get_model_version(lock, str(ticket))
            except MlflowException:
                raise RegistryError(
                    f"model {name!r}: this promotion held the registry lease over {LEASE_SECONDS:.0f} s and lost it; "
                    "nothing was changed, run it again"
                ) from None

        yield check
    finally:
        _drop_ticket(client, lock, ticket)


def _take_ticket(client, lock: str, name: str) -> int:
    """A new version of the lock model: its number is this promotion's place in the queue."""
    from mlflow.exceptions import MlflowException

    def create():
        holder = f"{socket.gethostname()}:{os.getpid()}"
        return client.create_model_version(lock, TICKET_SOURCE, tags={"kfnlp.holder": holder}, await_creation_for=0)

    try:
        return int(create().version)
    except MlflowException:  # the first promotion of this model: no lock model yet
        with contextlib.suppress(MlflowException):  # unless another one created it meanwhile
            client.create_registered_model(lock, description=f"kfnlp: tickets of promotions of {name} in progress")
        return int(create().version)


def _drop_ticket(client, lock: str, ticket: int) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.delete_model_version(lock, str(ticket))
    except MlflowException:
        pass  # already dropped (taken for dead by a waiting promotion)
    except RegistryError as exc:  # unreachable: the ticket expires after LEASE_SECONDS
        log.warning("%s; promotion ticket %d of %s stays until it expires", exc, ticket, lock)
