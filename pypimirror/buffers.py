"""One budget for the bytes a server process holds on behalf of clients that have not taken them.

A local file goes out in 1 MiB chunks through a buffer its connection holds until the client
has taken the chunk; a proxied file waits in its relay's queue, up to 4 MiB. Each is bounded
per connection, but nothing bounded them all together: 300 clients that stop reading held
300 MiB. :class:`BufferBudget` does. A response takes its full size while the budget has room,
else a small one, which is always granted: nobody waits for memory and nobody is turned away,
and a process holds at most the budget plus one small buffer per open connection (itself
capped by ``serve.max_connections``). A response takes its share once, when its body starts,
and gives it back when it ends: two integer operations on the IOLoop, no lock, nothing per chunk.
"""

from __future__ import annotations

__all__ = ["BufferBudget", "BufferStats"]

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BufferStats:
    """A snapshot of a :class:`BufferBudget`; ``squeezed`` (responses given the small size) only grows."""

    limit: int
    in_use: int
    squeezed: int


class BufferBudget:
    """Bytes of response buffers a process may hold at once; the IOLoop thread's alone."""

    __slots__ = ("in_use", "limit", "squeezed")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self.squeezed = 0

    def take(self, full: int, small: int) -> int:
        """``full`` bytes if the budget has room for them (or ``full`` is no more than ``small``),
        else ``small``; hand it back with :meth:`give_back`."""
        if self.in_use + full <= self.limit or full <= small:
            self.in_use += full
            return full
        self.in_use += small
        self.squeezed += 1
        return small

    def give_back(self, size: int) -> None:
        """Return what :meth:`take` granted, once the response no longer holds it."""
        self.in_use -= size

    @property
    def stats(self) -> BufferStats:
        return BufferStats(self.limit, self.in_use, self.squeezed)
