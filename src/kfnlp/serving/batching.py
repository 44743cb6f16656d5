"""Request batching: the texts of concurrent requests gathered into one forward pass.

A request's texts wait in a queue; one worker takes the first waiting request, then keeps taking requests
until the batch holds ``max_batch_size`` texts or ``max_latency_ms`` have passed since the first arrived,
and runs the batch on the model in a thread of its own, so the event loop keeps accepting requests
meanwhile. A request is never split across batches (its texts are answered together); one larger than
``max_batch_size`` runs as a batch of its own. A failure of the batch fails each of its requests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Waiting:
    texts: list[str]
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


class Batcher:
    """Gathers :meth:`submit` calls into batches for ``run`` (texts in, one answer per text out)."""

    def __init__(self, run: Callable[[list[str]], list], max_batch_size: int, max_latency_ms: float):
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_latency = max_latency_ms / 1000
        self.batches: list[int] = []  # texts per batch run, for the metrics
        self.on_batch: Callable[[int, int], None] | None = None  # (texts, requests) of each batch
        self._queue: asyncio.Queue[_Waiting] | None = None
        self._worker: asyncio.Task | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="kfnlp-model")

    async def submit(self, texts: list[str]) -> list:
        """The answers to ``texts``, once the batch they joined has run."""
        if self._queue is None:  # made in the server's event loop, on the first request
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._work())
        waiting = _Waiting(texts, asyncio.get_running_loop().create_future())
        await self._queue.put(waiting)
        return await waiting.future

    async def _work(self) -> None:
        assert self._queue is not None
        carried: _Waiting | None = None  # the request that did not fit the last batch: the next one starts with it
        while True:
            first = carried or await self._queue.get()
            carried = None
            batch, size = [first], len(first.texts)
            deadline = first.arrived + self.max_latency
            while size < self.max_batch_size:
                try:
                    if self._queue.empty():
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        waiting = await asyncio.wait_for(self._queue.get(), remaining)
                    else:
                        waiting = self._queue.get_nowait()
                except (asyncio.TimeoutError, asyncio.QueueEmpty):
                    break
                if size + len(waiting.texts) > self.max_batch_size:
                    carried = waiting
                    break
                batch.append(waiting)
                size += len(waiting.texts)
            await self._run(batch)

    async def _run(self, batch: list[_Waiting]) -> None:
        texts = [text for waiting in batch for text in waiting.texts]
        self.batches.append(len(texts))
        if self.on_batch is not None:
            self.on_batch(len(texts), len(batch))
        try:
            answers = await asyncio.get_running_loop().run_in_executor(self._executor, self.run, texts)
        except Exception as exc:  # noqa: BLE001 - handed to each request, which reports it
            for waiting in batch:
                if not waiting.future.done():
                    waiting.future.set_exception(exc)
            return
        start = 0
        for waiting in batch:
            if not waiting.future.done():  # a client that went away leaves a cancelled future
                waiting.future.set_result(answers[start : start + len(waiting.texts)])
            start += len(waiting.texts)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
