"""Which User-Agents are bots: the one rule shared by the live vote queue and trace replay.

A bot is a client whose User-Agent contains one of ``votes.bots`` in any case. Live votes and
a replayed access log must agree on that, or a simulation would count requests the running
mirror never votes for; so both ask :class:`BotMatcher`.
"""

from __future__ import annotations

__all__ = ["BotMatcher"]

import functools
import logging
from collections.abc import Sequence

logger = logging.getLogger(__name__)

# User-Agents whose answer is remembered, each at most _CACHEABLE_USER_AGENT characters long
# (a longer one is checked every time, so hostile headers cannot make the cache large).
_USER_AGENTS_CACHED = 1024
_CACHEABLE_USER_AGENT = 512


class BotMatcher:
    """Case-insensitive substring matching of User-Agents against a list of bot names.

    A site sees few distinct User-Agents, so answers for short ones are cached. Empty names
    in the list are ignored (an empty substring would make every client a bot).
    """

    def __init__(self, bots: Sequence[str]) -> None:
        self._bots = tuple(bot.lower() for bot in bots if bot)
        self._cached_matches = functools.lru_cache(maxsize=_USER_AGENTS_CACHED)(self._matches)

    def is_bot(self, user_agent: str) -> bool:
        """True if ``user_agent`` contains one of the bot names, in any case."""
        if not self._bots:
            return False
        if len(user_agent) > _CACHEABLE_USER_AGENT:
            return self._matches(user_agent)
        return self._cached_matches(user_agent)

    def _matches(self, user_agent: str) -> bool:
        # lower() plus `in` measured ~0.4 µs for a long pip User-Agent; an IGNORECASE regex ~5 µs.
        lowered = user_agent.lower()
        return any(bot in lowered for bot in self._bots)
