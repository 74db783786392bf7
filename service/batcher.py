"""One network pass for the /predict and V2 infer calls that reach the network in the same event-loop turn."""

from __future__ import annotations

import asyncio

import numpy as np

from mlp import as_input
from service.loaded_model import Answers, LoadedModel
from service.metrics import Metrics


class PredictBatcher:
    """One network pass for the /predict and V2 infer calls that reach the network in the same turn.

    A busy uvicorn starts the requests of every connection that has one ready in a single turn
    of the loop, and each runs to this point without waiting. The first call of a turn runs at
    once, alone, and marks the turn; a later call in the same turn queues, and the first queued
    call schedules `flush` with `call_soon`, which runs after every task already ready has had
    its turn. So the batch is whatever else arrived together, nothing ever waits for a timer,
    and a lone request (low load) never batches and pays nothing but the mark. One matrix
    product for n rows reads the weights once instead of n times. Each model version in a batch
    gets its own pass. A row computed in a batch can differ from the same row computed alone in
    the last bit of a float (another BLAS kernel): `MNIST_PREDICT_BATCHING=false` turns it off
    for answers that must not depend on what else was in flight.
    """

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._queue: list[tuple[LoadedModel, np.ndarray, asyncio.Future[Answers]]] = []
        self._turn_taken = False

    async def answer(self, model: LoadedModel, digits: np.ndarray) -> Answers:
        loop = asyncio.get_running_loop()
        if not self._turn_taken:
            self._turn_taken = True
            loop.call_soon(self._next_turn)
            return model.answer(digits)
        future: asyncio.Future[Answers] = loop.create_future()
        if not self._queue:
            loop.call_soon(self.flush)
        self._queue.append((model, digits, future))
        return await future

    def _next_turn(self) -> None:
        self._turn_taken = False

    def flush(self) -> None:
        queue, self._queue = self._queue, []
        self.metrics.predict_batches.observe(len(queue))
        by_model: dict[int, list[tuple[LoadedModel, np.ndarray, asyncio.Future[Answers]]]] = {}
        for item in queue:
            by_model.setdefault(id(item[0]), []).append(item)
        for items in by_model.values():
            try:
                rows = items[0][1] if len(items) == 1 else join([digits for _, digits, _ in items])
                answers = items[0][0].answer(rows)
            except Exception as exc:  # handed to every caller, whose error handling takes over
                for _, _, future in items:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for _, digits, future in items:
                if not future.done():  # a caller that went away
                    future.set_result(answers.rows(start, start + len(digits)))
                start += len(digits)


def join(parts: list[np.ndarray]) -> np.ndarray:
    """The rows of every part, (n, 784): uint8 pixels (/predict, V2 UINT8) or float32 0..1 (V2 FP32).

    Parts of both kinds are all scaled to float32 first: 255 as a byte is 1.0 as a float.
    """
    flat = [part.reshape(len(part), -1) for part in parts]
    if len({part.dtype for part in flat}) > 1:
        flat = [as_input(part) for part in flat]
    return np.concatenate(flat)
