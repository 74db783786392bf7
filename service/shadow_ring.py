"""The shadow's rows in memory the serving process and its shadow workers share.

Why shared memory: a request under a shadow policy writes its digits and `current`'s probabilities
here (two small array copies on the event loop), and the worker processes read them from here and
write the shadow's probabilities beside them, so a pass sends the worker a position and a count,
not its rows: no joining of the requests' arrays and no pickling of 200 KB per pass by the
serving process's threads, which ran on the serving core (bench/README.md, "The shadow's cost").

The memory is a file with no name (`memfd_create` on Linux, an unlinked temporary file elsewhere),
handed to the workers as a descriptor: nothing is left in /dev/shm when a process dies.
`RowRing` only lays the arrays out; which slots are in use is service.shadow's business.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import tempfile

import numpy as np

PIXELS = 784  # a 28x28 digit, as the network reads it
CLASSES = 10


class RowRing:
    """`capacity` slots, then two buffers of `pass_rows` (a pass's rows, copied out of the slots, so
    that a pass the scheduler keeps waiting holds up no slot): each row a digit (`rows`), `current`'s
    probabilities (`theirs`), the shadow's (`ours`) and a tag (`tags`: service.shadow's), over a
    descriptor `fd` a worker process maps too (`RowRing.attach`)."""

    def __init__(self, capacity: int, pass_rows: int = 0, fd: int | None = None):
        self.capacity = capacity
        self.pass_rows = pass_rows
        self.buffers = (capacity, capacity + pass_rows)  # where each buffer's rows start
        self.total = capacity + 2 * pass_rows
        self.size = self.total * (PIXELS + 2 * CLASSES * 4 + 4)
        if fd is None:
            fd = new_file_descriptor()
            os.ftruncate(fd, self.size)
        self.fd = fd
        self._map = mmap.mmap(fd, self.size)
        total = self.total
        self.rows = self._array(np.uint8, PIXELS, 0)
        self.theirs = self._array(np.float32, CLASSES, total * PIXELS)
        self.ours = self._array(np.float32, CLASSES, total * (PIXELS + CLASSES * 4))
        self.tags = self._array(np.int32, 1, total * (PIXELS + 2 * CLASSES * 4)).reshape(total)
        self._bytes = memoryview(self._map)
        self._theirs_at = total * PIXELS

    @classmethod
    def attach(cls, fd: int, capacity: int, pass_rows: int) -> RowRing:
        """The worker's view of a ring another process made."""
        return cls(capacity, pass_rows, fd)

    def put_one(self, slot: int, row: np.ndarray, probabilities: np.ndarray, tag: int) -> None:
        """One request of one digit: (1, 28, 28) uint8 and (1, 10) float32 copied as bytes (a third
        of the time of array assignment), or as arrays when they are not of those types."""
        pixels, answers = row.tobytes(), probabilities.tobytes()
        if len(pixels) != PIXELS or len(answers) != CLASSES * 4:
            self.put(slot, row.reshape(1, -1), probabilities, tag)
            return
        self._bytes[slot * PIXELS : (slot + 1) * PIXELS] = pixels
        at = self._theirs_at + slot * CLASSES * 4
        self._bytes[at : at + CLASSES * 4] = answers
        self.tags[slot] = tag | 1

    def put(self, slot: int, rows: np.ndarray, probabilities: np.ndarray, tag: int) -> None:
        """Write a request's rows and answers from `slot` on, past the last slot to the first; the
        first row's tag is `tag | 1`, the others' `tag`."""
        n = len(rows)
        head = min(n, self.capacity - slot)
        for at, part in ((slot, slice(0, head)), (0, slice(head, n))):
            count = part.stop - part.start
            self.rows[at : at + count] = rows[part]
            self.theirs[at : at + count] = probabilities[part]
            self.tags[at : at + count] = tag
        self.tags[slot] = tag | 1

    def _array(self, dtype: type, width: int, offset: int) -> np.ndarray:
        return np.frombuffer(self._map, dtype, self.total * width, offset).reshape(self.total, width)

    def close(self) -> None:
        """Close the descriptor and unmap (unless a view of the arrays is still held somewhere)."""
        os.close(self.fd)
        self._bytes.release()
        del self.rows, self.theirs, self.ours, self.tags
        with contextlib.suppress(BufferError):  # a view left: unmapped when the last one goes
            self._map.close()


def new_file_descriptor() -> int:
    """A descriptor of a file no other process can open by name, freed when the last holder closes it."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("mnist-shadow-rows")
    fd, path = tempfile.mkstemp(prefix="mnist-shadow-rows-")
    os.unlink(path)
    return fd
