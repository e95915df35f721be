"""How much memory the worker's decoding may hold at once: a semaphore counted in bytes.

The decode pool bounds how many frames are decoded at once by threads; that
alone does not bound memory, because one small message can decode to hundreds
of megabytes (a 77 KB 16-bit PNG of 6300x6300 pixels holds 79 MB as decoded
and 159 MB as RGB). Each decode takes a ``Lease``, asks it for the bytes its
frame will hold (``worker.decode.decode_cost``, known from the header before
any pixel is decoded) and gives them back when the frame has been
preprocessed. A frame that waits for bytes waits in the pool's thread, which
is the backpressure: the read-ahead stops feeding a pool that is full.

Waiters are served in order, so a large frame is not starved by a stream of
small ones. A request larger than the whole budget can never be met: it raises
FrameDecodeError("image-too-large"), and the frame becomes a dead letter.
"""

from __future__ import annotations

import threading
from collections import deque
from contextlib import contextmanager
from typing import Iterator

from wire.errors import FrameDecodeError

MIB = 1024 * 1024


class DecodeBudget:
    """``capacity`` bytes shared by every decode in the process."""

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("a decode budget must be positive")
        self.capacity = capacity
        self._used = 0
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()  # tickets of waiting requests, in arrival order

    def in_use(self) -> int:
        """Bytes held now (a gauge's value)."""
        return self._used

    def waiting(self) -> int:
        """Decodes waiting for bytes now (a gauge's value: the budget, not the threads, is what limits)."""
        return len(self._queue)

    @contextmanager
    def lease(self) -> Iterator["Lease"]:
        """A lease for one frame; everything it took is given back when the block ends, however it ends."""
        held = Lease(self)
        try:
            yield held
        finally:
            held.release()

    def _acquire(self, nbytes: int, what: str) -> None:
        if nbytes > self.capacity:
            raise FrameDecodeError(
                "image-too-large",
                f"{what} needs {nbytes / MIB:.0f} MiB to decode, more than the decode budget of "
                f"{self.capacity / MIB:.0f} MiB",
            )
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            try:
                self._cond.wait_for(lambda: self._queue[0] is ticket and self._used + nbytes <= self.capacity)
                self._used += nbytes
            finally:
                self._queue.remove(ticket)
                self._cond.notify_all()

    def _release(self, nbytes: int) -> None:
        if nbytes:
            with self._cond:
                self._used -= nbytes
                self._cond.notify_all()


class Lease:
    """The bytes one frame's decode holds from a DecodeBudget."""

    def __init__(self, budget: DecodeBudget) -> None:
        self._budget = budget
        self.held = 0

    def take(self, nbytes: int, what: str = "the frame") -> None:
        """Wait until ``nbytes`` more fit in the budget and hold them.

        :raises FrameDecodeError: ("image-too-large") ``nbytes`` exceeds the whole budget.
        """
        self._budget._acquire(nbytes, what)
        self.held += nbytes

    def release(self) -> None:
        self._budget._release(self.held)
        self.held = 0
