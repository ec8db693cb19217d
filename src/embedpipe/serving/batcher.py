"""Micro-batching of concurrent requests: their texts encoded together, in one thread, each request on its own.

`MicroBatcher.encode(texts, deadline)` waits for the request's rows. A request whose texts cannot be
encoded fails alone (`ItemFailed`, naming the text), the others of its batch are answered; a request not
answered by its deadline gets `DeadlineExceeded` and is dropped from the queue, and the batcher thread
carries on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


class DeadlineExceeded(TimeoutError):
    """A request that was not answered within its deadline (answered with HTTP 504)."""


class ItemFailed(ValueError):
    """A request could not be encoded; `index` is the position of the text that fails alone (None: none does)."""

    def __init__(self, index: int | None, cause: BaseException):
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.index = index


@dataclass(eq=False)
class _Job:
    texts: list[str]
    deadline: float | None
    done: threading.Event = field(default_factory=threading.Event)
    result: tuple | None = None
    error: BaseException | None = None
    abandoned: bool = False

    def expired(self, now: float) -> bool:
        return self.abandoned or (self.deadline is not None and now >= self.deadline)

    def finish(self, result=None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()


class MicroBatcher:
    """Encodes the texts of concurrent requests together, in one background thread.

    Requests that arrive while a batch is being encoded wait and are encoded as the next batch (up to
    `max_texts` texts), so under load the model sees batches instead of one text at a time, and torch
    never runs two encodes at once on the same cores.

    `encode_fn(texts)` returns one row per text (a numpy array); `encode(texts)` returns the rows of one
    request. When a batch fails, each of its requests is encoded alone, and a failing request text by text,
    so only the request with the bad text fails (`ItemFailed`).

    Example:
        >>> import numpy as np
        >>> batcher = MicroBatcher(lambda texts: np.array([[len(t)] for t in texts]))
        >>> batcher.encode(["ab", "abc"]).tolist()
        [[2], [3]]
    """

    def __init__(self, encode_fn, max_texts: int = 64):
        self.encode_fn = encode_fn
        self.max_texts = max_texts
        self.pending: queue.Queue = queue.Queue()
        threading.Thread(target=self._run, name="embedpipe-batcher", daemon=True).start()

    def encode(self, texts: list[str], deadline: float | None = None):
        """The rows of `texts`, encoded in some batch.

        Args:
            texts: One request's texts.
            deadline: `time.monotonic()` by which the answer must be there (None: wait as long as it takes).

        Raises:
            ItemFailed: naming the text that could not be encoded.
            DeadlineExceeded: when the deadline passed first.
        """
        job = _Job(list(texts), deadline)
        self.pending.put(job)
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not job.done.wait(timeout):
            job.abandoned = True  # the batcher skips it if it has not started on it
            raise DeadlineExceeded("the model did not answer within the request's deadline; retry later")
        if job.error is not None:
            raise job.error
        return job.result

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            try:
                self._encode(batch)
            except Exception as err:  # never let the thread die: every later request would hang
                logger.exception("the batcher failed on a batch of %d requests", len(batch))
                for job in batch:
                    if not job.done.is_set():
                        job.finish(error=err)

    def _next_batch(self) -> list[_Job]:
        batch: list[_Job] = []
        count = 0
        while not batch or count < self.max_texts:
            try:
                job = self.pending.get() if not batch else self.pending.get_nowait()
            except queue.Empty:
                break
            if job.expired(time.monotonic()):
                job.finish(error=DeadlineExceeded("the request's deadline passed while it waited for the model"))
                continue
            batch.append(job)
            count += len(job.texts)
        return batch

    def _encode(self, batch: list[_Job]) -> None:
        try:
            vectors = self.encode_fn([text for job in batch for text in job.texts])
        except Exception:
            for job in batch:  # one bad text must not fail the other requests
                self._encode_alone(job)
            return
        start = 0
        for job in batch:
            job.finish(vectors[start : start + len(job.texts)])
            start += len(job.texts)

    def _encode_alone(self, job: _Job) -> None:
        try:
            job.finish(self.encode_fn(job.texts))
            return
        except Exception as err:
            failure = ItemFailed(0 if len(job.texts) == 1 else None, err)
        if len(job.texts) > 1:
            for index, text in enumerate(job.texts):
                try:
                    self.encode_fn([text])
                except Exception as err:
                    failure = ItemFailed(index, err)
                    break
        job.finish(error=failure)
