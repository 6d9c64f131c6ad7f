"""Where a package file is held, with a short memory of the files that are in no tier.

Most package-file requests of a partial mirror are misses, and the same few misses repeat: a
new release that every CI job of a farm fetches before the cache job has picked it up. Each
miss costs one ``lstat`` per tier, and on this kind of machine one system call under load is
about 5 % of a whole 302 (``docs/performance.md``, Serve). :class:`TierLookup` remembers a miss for
``miss_ttl`` (one second by default) and answers a repeat from memory, as nginx's
``open_file_cache_errors`` does. A file placed in a tier meanwhile is served from it at most
``miss_ttl`` later; until then the client is redirected, which is a correct answer too. Hits
are never remembered: a file evicted from a tier must not be looked for where it was.
"""

from __future__ import annotations

__all__ = ["DEFAULT_MISS_TTL_S", "TierLookup"]

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pypimirror.pkgpath import PackagePath, find_in_tiers

#: How long a miss is remembered, in seconds.
DEFAULT_MISS_TTL_S = 1.0
# The most misses remembered; when full the memory starts afresh (a burst of distinct misses
# then costs one lstat each, as without it).
_MAX_MISSES = 50_000


class TierLookup:
    """:func:`~pypimirror.pkgpath.find_in_tiers` over fixed ``tier_roots``, misses remembered
    for ``miss_ttl`` seconds. One per process; the IOLoop thread's alone."""

    def __init__(
        self,
        tier_roots: Sequence[Path],
        *,
        miss_ttl: float = DEFAULT_MISS_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tier_roots = tuple(tier_roots)
        self._miss_ttl = miss_ttl
        self._clock = clock
        self._misses: dict[str, float] = {}  # relpath -> when its miss is forgotten

    def find(self, path: PackagePath) -> tuple[int, Path, os.stat_result] | None:
        """The hottest tier holding ``path`` (tier index, absolute path, its stat), or None."""
        relpath = path.relpath
        now = self._clock()
        forget_at = self._misses.get(relpath)
        if forget_at is not None and now < forget_at:
            return None
        found = find_in_tiers(self.tier_roots, path)
        if found is None and self._miss_ttl > 0:
            if len(self._misses) >= _MAX_MISSES:
                self._misses.clear()
            self._misses[relpath] = now + self._miss_ttl
        elif forget_at is not None:
            del self._misses[relpath]
        return found
