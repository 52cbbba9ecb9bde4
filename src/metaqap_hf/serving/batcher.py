"""Dynamic batching: images from concurrent requests are gathered until `max_batch` are waiting or the first has
waited `max_wait` seconds, scored in one forward pass on the model's own thread, and each result handed back to the
request that sent it. The event loop never runs the model, so it keeps accepting and answering requests meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["DynamicBatcher"]


class DynamicBatcher:
    """Runs `score_batch(list of inputs) -> list of results` (same order, same length) on batches of the inputs
    given to `submit`. `on_batch(size)` is told each batch's size. Start and stop it inside the event loop."""

    def __init__(self, score_batch: Callable[[list[Any]], list[Any]], *, max_batch: int, max_wait: float,
                 on_batch: Callable[[int], None] | None = None):
        self.score_batch, self.max_batch, self.max_wait = score_batch, max_batch, max_wait
        self.on_batch = on_batch
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._model_thread: ThreadPoolExecutor | None = None

    @property
    def waiting(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="metaqap-model")
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Score what is queued, then stop (requests still waiting get their results)."""
        if self._task is None:
            return
        await self._queue.put(None)
        await self._task
        self._model_thread.shutdown(wait=True)
        self._task = None

    async def submit(self, item: Any) -> Any:
        """The result of `item`, scored in a batch with others; cancelling the caller drops it from its batch if
        the batch has not started."""
        if self._task is None or self._task.done():
            raise RuntimeError("the batcher is not running")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def _next_batch(self) -> tuple[list[tuple[Any, asyncio.Future]], bool]:
        """(batch, stop after it): the first job waits as long as it takes, the rest at most `max_wait` after it."""
        first = await self._queue.get()
        if first is None:
            return [], True
        batch, loop = [first], asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if job is None:
                return batch, True
            batch.append(job)
        return batch, False

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            batch, stopping = await self._next_batch()
            if stopping:  # drain: everything queued before stop() still gets scored
                while not self._queue.empty():
                    job = self._queue.get_nowait()
                    if job is not None:
                        batch.append(job)
            batch = [(item, future) for item, future in batch if not future.done()]  # callers that gave up
            for start in range(0, len(batch), self.max_batch):
                await self._score(loop, batch[start:start + self.max_batch])

    async def _score(self, loop, batch: list[tuple[Any, asyncio.Future]]) -> None:
        if not batch:
            return
        try:
            results = await loop.run_in_executor(self._model_thread, self.score_batch, [item for item, _ in batch])
        except Exception as error:  # the model failed (out of memory...): every caller in the batch is told
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        if self.on_batch is not None:
            self.on_batch(len(batch))
        for (_, future), result in zip(batch, results):
            if not future.done():
                future.set_result(result)
