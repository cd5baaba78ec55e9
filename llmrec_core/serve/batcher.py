"""Micro-batching: requests that arrive together are answered by one call over all of them.

A caller's `submit` queues its item and waits; one worker thread takes every item queued (after waiting up to
`window_s` for more), runs `run(items)` once and hands each caller its result (or the batch's exception). A lone
request does not wait for company unless `window_s` says so: batches form by themselves while the worker is
busy, so they grow with the load. The thread stops after `idle_s` without work and starts again on the next
submit, so an object that holds a batcher (a recommender replaced by a reload) leaves no thread behind.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import Callable, Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class MicroBatcher(Generic[In, Out]):
    """Run `run(items) -> results` (one result per item, same order) over the items submitted together."""

    def __init__(self, run: Callable[[list[In]], list[Out]], window_s: float = 0.0, max_batch: int = 256,
                 idle_s: float = 2.0, name: str = "batcher"):
        self._run, self.window_s, self.max_batch, self.idle_s, self.name = run, window_s, max_batch, idle_s, name
        self._cond = threading.Condition()
        self._queue: list[tuple[In, Future]] = []
        self._running = False
        self.batches = self.items = self.largest = 0  # how it batched so far

    def submit(self, item: In) -> Out:
        """`run`'s result for `item`, computed in a batch with the items submitted alongside it."""
        future: Future = Future()
        with self._cond:
            self._queue.append((item, future))
            if not self._running:
                self._running = True
                threading.Thread(target=self._work, name=self.name, daemon=True).start()
            self._cond.notify()
        return future.result()

    def _take(self) -> list[tuple[In, Future]] | None:
        """The next batch, or None when the thread should stop (idle for `idle_s`)."""
        with self._cond:
            if not self._queue and not self._cond.wait_for(lambda: self._queue, timeout=self.idle_s):
                self._running = False
                return None
            if self.window_s and len(self._queue) < self.max_batch:
                deadline = time.monotonic() + self.window_s
                self._cond.wait_for(lambda: len(self._queue) >= self.max_batch,
                                    timeout=max(deadline - time.monotonic(), 0))
            batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
            return batch

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            self.batches, self.items, self.largest = self.batches + 1, self.items + len(batch), max(self.largest,
                                                                                                    len(batch))
            try:
                results = self._run([item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
            except BaseException as e:  # every caller of the batch gets the error; the worker goes on
                for _, future in batch:
                    future.set_exception(e)
                continue
            for (_, future), result in zip(batch, results):
                future.set_result(result)
