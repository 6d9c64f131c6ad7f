"""Cache planning, pure: which files each tier should hold, and the order that gets them there.

Pinned files (the pinned sets' files) are placed before anything is scored
(:func:`place_pinned`): each goes to the hottest tier with room, and is never evicted; the
files the votes ask for share only the room they leave.
:func:`plan_cache` scores every other cached and wanted file, assigns them first-fit to the
tiers (hottest first), and returns a :class:`CachePlan` whose steps, run in order, never put a
tier over its limit: evictions first, then moves (a move waits until its target has room;
moves that can never get room, such as a swap between two full tiers, are left out, and
when that would keep a shrunken tier over its limit its lowest-scored files are evicted
instead), then downloads. No I/O happens here; the same input always gives the same plan.
"""

from __future__ import annotations

__all__ = [
    "SCORE_MULTIPLIER",
    "SCORE_SIZE_FLOOR",
    "SIZE_AWARE_OVERHEAD",
    "SIZE_AWARE_RETENTION",
    "CachePlan",
    "Candidate",
    "CandidateRanking",
    "Download",
    "Eviction",
    "Move",
    "PinnedPlacement",
    "RemoteFile",
    "assign_tiers",
    "format_plan",
    "plan_cache",
    "rank_candidates",
    "schedule_moves",
    "score",
    "place_pinned",
    "size_aware_score",
]

import itertools
import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass
from operator import attrgetter
from typing import NamedTuple, cast

from sortedcontainers import SortedKeyList

from pypimirror.byteunits import format_bytes
from pypimirror.config import CachePolicy
from pypimirror.inventory import LocalFile

logger = logging.getLogger(__name__)

#: The seed's constants: sizes below 2 GiB score as 2 GiB, so below it only votes count.
SCORE_SIZE_FLOOR = 2 * 1024**3
SCORE_MULTIPLIER = 1024**2


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """A wanted file the index lists: its size and digests, and its metadata file's, if any."""

    path: str
    size: int
    sha256: str
    metadata_sha256: str | None = None
    metadata_size: int | None = None

    @property
    def bytes(self) -> int:
        return self.size + (self.metadata_size or 0)


class Candidate(NamedTuple):
    """A file competing for room: cached (``local``) or wanted (``remote``), never both.

    A named tuple rather than a dataclass: a run (and the simulator, hourly) builds one per
    cached and wanted file, and a tuple is several times cheaper to create.
    """

    path: str
    votes: int
    size: int
    bytes: int
    score: float
    local: LocalFile | None = None
    remote: RemoteFile | None = None
    #: Its place in a :class:`CandidateRanking`, best first: (-score, -votes, size, path).
    #: Pinned files rank before all, whatever it says.
    rank: tuple[float, int, int, str] = (0.0, 0, 0, "")


class Eviction(NamedTuple):
    file: LocalFile
    score: float


@dataclass(frozen=True, slots=True)
class Move:
    file: LocalFile
    target: int
    score: float

    @property
    def is_promotion(self) -> bool:
        return self.target < self.file.tier


class Download(NamedTuple):
    file: RemoteFile
    tier: int
    score: float


@dataclass(frozen=True, slots=True)
class CachePlan:
    """The steps of one run, in execution order, and the bytes per tier before and after.

    ``blocked`` moves are not carried out (no order of steps makes room for them);
    ``deferred`` counts wanted files that got a tier but no room because of them, and
    ``unplaced`` those that fit in no tier at all. ``pinned`` counts the pinned files the plan
    holds or fetches, ``pinned_bytes`` what they all need, and ``pinned_short`` the bytes of
    those that fit in no tier (the budget is smaller than the pinned sets: a cached one stays
    where it is, a missing one is not fetched).
    """

    limits: tuple[int, ...]
    used_before: tuple[int, ...]
    used_after: tuple[int, ...]
    evictions: tuple[Eviction, ...]
    moves: tuple[Move, ...]
    blocked: tuple[Move, ...]
    downloads: tuple[Download, ...]
    kept: int
    deferred: int
    unplaced: int
    pinned: int = 0
    pinned_bytes: int = 0
    pinned_short: int = 0


_PATH, _RANK = attrgetter("path"), attrgetter("rank")


def score(votes: int, size: int) -> float:
    """The seed's score: ``votes / (max(size, 2 GiB) + 1) * 2**20``, evaluated left to right.

    >>> score(2, 1000)
    0.0009765624995452526
    """
    return votes / (max(size, SCORE_SIZE_FLOOR) + 1) * SCORE_MULTIPLIER


#: The default policy's per-file cost in bytes added to a file's size: a request for a tiny
#: file is worth a little more than its bytes (a connection, a round trip), not unboundedly more.
SIZE_AWARE_OVERHEAD = 64 * 1024
#: The default policy's bonus for a file already cached: a newcomer must score this much better
#: to displace it, so files at the margin are not evicted and fetched again every run.
SIZE_AWARE_RETENTION = 1.5


def size_aware_score(votes: int, size: int) -> float:
    """The default policy's score: votes per MiB (plus a small per-file cost).

    The votes are all those counted in the window, not distinct networks: a file's votes then
    grow with its requests, as the hits it would bring do. A 300 MB wheel voted twice scores far
    below a 100 kB one voted twice, so a small budget holds the many small popular files
    instead of a few large ones.
    """
    return votes / (size + SIZE_AWARE_OVERHEAD) * SCORE_MULTIPLIER


def rank_candidates(
    local: Iterable[LocalFile],
    remote: Iterable[RemoteFile],
    votes: Mapping[str, int],
    *,
    policy: CachePolicy = "seed",
) -> list[Candidate]:
    """Every candidate, best first: by score (:func:`score` under ``seed``, under ``default``
    :func:`size_aware_score`, cached files with :data:`SIZE_AWARE_RETENTION`), then votes,
    then smaller size, then path.
    """
    return CandidateRanking(policy).rank({f.path: f for f in local}, {r.path: r for r in remote}, votes)


class CandidateRanking:
    """:func:`rank_candidates`, kept from one run to the next.

    A replay plans every hour of a month over the same few hundred thousand files, most of them
    with the votes and the place they had an hour before. Told which paths may have changed, a
    kept ranking scores again only those (a cached file is the same :class:`LocalFile` object
    while it stays where it is, so most of them are found unchanged) and moves them within its
    order, kept sorted in blocks (``sortedcontainers``) so that taking a candidate out or
    putting one in costs little however many there are. Its order is always exactly that of a
    fresh ranking over the same input.
    """

    def __init__(self, policy: CachePolicy = "seed") -> None:
        self.policy = policy
        self._ranked: SortedKeyList = SortedKeyList(key=_RANK)
        self._by_path: dict[str, Candidate] = {}

    def rank(
        self,
        local: Mapping[str, LocalFile],
        remote: Mapping[str, RemoteFile],
        votes: Mapping[str, int],
        *,
        changed: Set[str] | None = None,
    ) -> list[Candidate]:
        """The candidates of ``local`` (cached) and ``remote`` (wanted) files, best first.

        ``changed``: the paths whose file (its presence in ``local`` or ``remote``, or its
        object) or votes may differ from the previous call's (before the first call, from
        nothing); every other path must be exactly as it was, and ``remote`` may then hold
        only the changed ones. Without it every candidate is ranked afresh.
        """
        if changed is None:
            self._by_path = {}
            self._ranked = SortedKeyList(
                self._candidates(itertools.chain(local, remote), local, remote, votes), key=_RANK
            )
            return list(self._ranked)
        by_path, ranked = self._by_path, self._ranked
        for path in changed:
            previous = by_path.pop(path, None)
            if previous is not None:
                ranked.remove(previous)
        add = ranked.add  # one by one: update() sorts the whole list again past a few hundred
        for candidate in self._candidates(changed, local, remote, votes):
            add(candidate)
        return list(ranked)

    def _candidates(
        self, paths: Iterable[str], local: Mapping[str, LocalFile], remote: Mapping[str, RemoteFile],
        votes: Mapping[str, int],
    ) -> Iterator[Candidate]:
        """The candidates of those of ``paths`` in ``local`` or ``remote``, recorded by path."""
        seed = self.policy == "seed"
        scorer = score if seed else size_aware_score
        retention = 1.0 if seed else SIZE_AWARE_RETENTION
        by_path = self._by_path
        # The tuples are made by tuple.__new__ (a named tuple's own constructor is a Python
        # function), and the scorer is bound to a local name: this runs per file per run.
        new = tuple.__new__
        for path in paths:
            f = local.get(path)
            if f is not None:
                n = votes.get(path, 0)
                size = f.size
                total = size + (f.metadata_size or 0)
                value = scorer(n, size if seed else total) * retention
                candidate = new(Candidate, (path, n, size, total, value, f, None, (-value, -n, size, path)))
            else:
                r = remote.get(path)
                if r is None:
                    continue  # gone
                n = votes[path]
                size = r.size
                total = size + (r.metadata_size or 0)
                value = scorer(n, size if seed else total)
                candidate = new(Candidate, (path, n, size, total, value, None, r, (-value, -n, size, path)))
            by_path[path] = candidate
            yield candidate


def assign_tiers(candidates: Sequence[Candidate], limits: Sequence[int]) -> list[int]:
    """First fit, in the candidates' order: the hottest tier with room, else -1 (not kept)."""
    remaining = list(limits)
    assigned: list[int] = []
    for candidate in candidates:
        tier = next((t for t, room in enumerate(remaining) if room >= candidate.bytes), -1)
        if tier >= 0:
            remaining[tier] -= candidate.bytes
        assigned.append(tier)
    return assigned


def schedule_moves(
    moves: Sequence[Move], used: Sequence[int], limits: Sequence[int]
) -> tuple[list[Move], list[Move]]:
    """Order ``moves`` so no tier ever exceeds its limit: (runnable in order, blocked).

    Demotions go first (they free the hotter tiers), each pass runs every move whose target
    has room, and passes repeat while one of them made progress.
    """
    fill = list(used)
    pending = sorted(moves, key=lambda m: (m.is_promotion, -m.score, m.file.path))
    ordered: list[Move] = []
    progress = True
    while pending and progress:
        progress = False
        waiting: list[Move] = []
        for move in pending:
            if fill[move.target] + move.file.bytes <= limits[move.target]:
                fill[move.target] += move.file.bytes
                fill[move.file.tier] -= move.file.bytes
                ordered.append(move)
                progress = True
            else:
                waiting.append(move)
        pending = waiting
    return ordered, pending


@dataclass(frozen=True, slots=True)
class PinnedPlacement:
    """Where the pinned files go: each placed path's tier, the room left per tier, and the paths
    that fit nowhere."""

    tiers: Mapping[str, int]
    room: tuple[int, ...]
    unplaced: tuple[str, ...]


def place_pinned(files: Iterable[tuple[str, int]], limits: Sequence[int]) -> PinnedPlacement:
    """First fit of the pinned ``(path, bytes)``, largest first (then by path): the hottest tier
    with room. ``pin add`` checks a new set with this, the cache plan places pins with it."""
    room = list(limits)
    tiers: dict[str, int] = {}
    unplaced: list[str] = []
    for path, size in sorted(files, key=lambda f: (-f[1], f[0])):
        tier = next((t for t, free in enumerate(room) if free >= size), -1)
        if tier < 0:
            unplaced.append(path)
            continue
        room[tier] -= size
        tiers[path] = tier
    return PinnedPlacement(tiers, tuple(room), tuple(unplaced))


def _pinned_candidates(
    local: Mapping[str, LocalFile], remote: Mapping[str, RemoteFile], votes: Mapping[str, int],
    limits: Sequence[int],
) -> tuple[list[Candidate], list[int], list[int], int]:
    """The pinned files as candidates ranked before all others, their tiers, the room they leave
    per tier, and the bytes of those that fit nowhere.

    A cached pinned file that fits nowhere stays in its tier (its room is taken, never below 0);
    a missing one gets no tier.
    """
    files: list[LocalFile | RemoteFile] = [*local.values(), *remote.values()]
    placement = place_pinned(((f.path, f.bytes) for f in files), limits)
    room = list(placement.room)
    candidates: list[Candidate] = []
    tiers: list[int] = []
    short = 0
    for f in sorted(files, key=_PATH):
        tier = placement.tiers.get(f.path, -1)
        if tier < 0:
            short += f.bytes
            if isinstance(f, LocalFile):
                tier = f.tier
                room[tier] = max(0, room[tier] - f.bytes)
        cached = f if isinstance(f, LocalFile) else None
        wanted = f if isinstance(f, RemoteFile) else None
        candidates.append(Candidate(f.path, votes.get(f.path, 0), f.size, f.bytes, math.inf, cached, wanted))
        tiers.append(tier)
    return candidates, tiers, room, short


def plan_cache(
    local: Mapping[str, LocalFile],
    remote: Iterable[RemoteFile],
    votes: Mapping[str, int],
    limits: Sequence[int],
    *,
    policy: CachePolicy = "seed",
    pinned: Set[str] = frozenset(),
    ranking: CandidateRanking | None = None,
    changed: Set[str] | None = None,
) -> CachePlan:
    """The plan that makes the tiers hold the pinned files, then the best files that fit (see the
    module docstring).

    ``votes`` maps a path to its votes as ``policy`` counts them: under ``seed`` its distinct
    voting networks (only the files with at least ``cache.min_vote_count``), under ``default``
    every vote in the window (every voted file). ``remote`` holds the wanted files not cached
    yet, already filtered (listed, verifiable, within ``filesize_limit``). ``policy`` is
    ``cache.policy``: it chooses the ranking (:func:`rank_candidates`). ``pinned`` are the
    pinned sets' paths: those in ``local`` or ``remote`` are placed first and never evicted,
    whatever their votes. ``ranking``, kept by the caller from one plan to the next (the
    simulator's), ranks the same as a fresh one, only faster, when told which paths may have
    ``changed`` since its previous plan (see :meth:`CandidateRanking.rank`; a pinned path that
    became or stopped being pinned counts as changed); ``remote`` then needs to hold only the
    wanted files among them, and the pinned ones. The ranking must have been made for the
    same ``policy``.
    """
    remote = list(remote)
    # Looked up from the (few) pinned paths, and filtered only when there are pins: a run over a
    # million cached files without pins pays nothing for them.
    pinned_local = {path: local[path] for path in pinned if path in local}
    pinned_remote = {r.path: r for r in remote if r.path in pinned} if pinned else {}
    pins, pin_tiers, room, pinned_short = _pinned_candidates(pinned_local, pinned_remote, votes, limits)
    if ranking is None:
        ranking = CandidateRanking(policy)
    elif ranking.policy != policy:
        raise ValueError(f"a ranking for {ranking.policy!r} cannot rank {policy!r}")
    # Told what changed, the ranking looks only at those: a month's replay has 300,000 wanted files.
    remote_to_rank = {
        r.path: r for r in remote if (changed is None or r.path in changed) and r.path not in pinned_remote
    }
    ranked = ranking.rank(
        {path: f for path, f in local.items() if path not in pinned_local} if pinned_local else local,
        remote_to_rank,
        votes,
        changed=changed,
    )
    steps = _Steps(len(limits))
    steps.sort_out(pins, pin_tiers)
    if len(limits) == 1:
        steps.fit_one_tier(ranked, room[0])
    else:
        steps.sort_out(ranked, assign_tiers(ranked, room))
    used_before, evictions, moves, wanted = steps.used_before, steps.evictions, steps.moves, steps.wanted
    fill = list(used_before)
    for eviction in evictions:
        fill[eviction.file.tier] -= eviction.file.bytes
    ordered, blocked = _schedule_within_limits(moves, evictions, fill, limits, frozenset(pinned_local))
    for move in ordered:
        fill[move.target] += move.file.bytes
        fill[move.file.tier] -= move.file.bytes
    downloads: list[Download] = []
    for download in wanted:
        if fill[download.tier] + download.file.bytes <= limits[download.tier]:
            fill[download.tier] += download.file.bytes
            downloads.append(download)
    evictions.sort(key=lambda e: (e.score, e.file.path))
    return CachePlan(
        limits=tuple(limits),
        used_before=tuple(used_before),
        used_after=tuple(fill),
        evictions=tuple(evictions),
        moves=tuple(ordered),
        blocked=tuple(blocked),
        downloads=tuple(downloads),
        kept=steps.kept + len(blocked),
        deferred=len(wanted) - len(downloads),
        unplaced=steps.unplaced,
        pinned=sum(1 for tier in pin_tiers if tier >= 0),
        pinned_bytes=sum(pin.bytes for pin in pins),
        pinned_short=pinned_short,
    )


class _Steps:
    """What the candidates' tiers mean: the bytes cached per tier, the evictions, moves and
    wanted downloads, and the counts of files that stay and of wanted files that fit nowhere."""

    def __init__(self, tiers: int) -> None:
        self.used_before = [0] * tiers  # every cached file is a candidate: summed on the way
        self.evictions: list[Eviction] = []
        self.moves: list[Move] = []
        self.wanted: list[Download] = []
        self.kept = self.unplaced = 0

    def sort_out(self, candidates: Sequence[Candidate], tiers: Sequence[int]) -> None:
        """Record each candidate given the tier it was assigned (-1: none)."""
        for candidate, tier in zip(candidates, tiers, strict=True):
            cached = candidate.local
            if cached is not None:
                self.used_before[cached.tier] += candidate.bytes
                if tier < 0:
                    self.evictions.append(Eviction(cached, candidate.score))
                elif tier != cached.tier:
                    self.moves.append(Move(cached, tier, candidate.score))
                else:
                    self.kept += 1
            elif candidate.remote is not None:
                if tier < 0:
                    self.unplaced += 1
                else:
                    self.wanted.append(Download(candidate.remote, tier, candidate.score))

    def fit_one_tier(self, ranked: Sequence[Candidate], room: int) -> None:
        """:func:`assign_tiers` and :meth:`sort_out` for one tier, in one pass: a replay runs this
        over every voted file of a month at every planning instant."""
        used, evict, move, want = self.used_before, self.evictions.append, self.moves.append, self.wanted.append
        kept = unplaced = 0
        for candidate in ranked:
            size = candidate.bytes
            cached = candidate.local
            if cached is None:  # a ranked candidate is cached or wanted
                if size <= room:
                    room -= size
                    want(Download(cast(RemoteFile, candidate.remote), 0, candidate.score))
                else:
                    unplaced += 1
                continue
            used[cached.tier] += size
            if size > room:
                evict(Eviction(cached, candidate.score))
                continue
            room -= size
            if cached.tier:
                move(Move(cached, 0, candidate.score))
            else:
                kept += 1
        self.kept += kept
        self.unplaced += unplaced


def _schedule_within_limits(
    moves: list[Move], evictions: list[Eviction], fill: list[int], limits: Sequence[int], pinned: Set[str]
) -> tuple[list[Move], list[Move]]:
    """Schedule the moves; where blocked moves would leave a tier over its limit, evict instead.

    Each blocked move out of an over-full tier becomes an eviction (lowest score first) until
    that tier fits; the freed room may unblock other moves, so scheduling starts again. A
    ``pinned`` file is never evicted: its blocked move just waits for a later run.
    ``evictions`` and ``fill`` (bytes after evictions) are updated in place.
    """
    while True:
        ordered, blocked = schedule_moves(moves, fill, limits)
        after = list(fill)
        for move in ordered:
            after[move.target] += move.file.bytes
            after[move.file.tier] -= move.file.bytes
        converted: list[Move] = []
        for move in sorted(blocked, key=lambda m: (m.score, m.file.path)):
            tier = move.file.tier
            if after[tier] > limits[tier] and move.file.path not in pinned:
                after[tier] -= move.file.bytes
                converted.append(move)
        if not converted:
            return ordered, blocked
        for move in converted:
            logger.warning(
                "cache: no room to move %s from tier %d to %d; evicting it to bring tier %d "
                "within its limit", move.file.path, move.file.tier, move.target, move.file.tier,
            )
            moves.remove(move)
            evictions.append(Eviction(move.file, move.score))
            fill[move.file.tier] -= move.file.bytes


def format_plan(plan: CachePlan) -> str:
    """The plan for people (``sync --once --dry-run``): a summary per tier, then each step."""
    summary = (
        f"cache plan: {len(plan.evictions)} evictions, {len(plan.moves)} moves, "
        f"{len(plan.downloads)} downloads, {plan.kept} files stay, {len(plan.blocked)} moves blocked, "
        f"{plan.deferred} downloads deferred, {plan.unplaced} wanted files fit no tier"
    )
    if plan.pinned_bytes:
        summary += f"; pinned files: {format_bytes(plan.pinned_bytes)}"
        if plan.pinned_short:
            summary += f", {format_bytes(plan.pinned_short)} of them fit no tier"
    lines = [summary]
    for tier, (limit, before, after) in enumerate(zip(plan.limits, plan.used_before, plan.used_after, strict=True)):
        lines.append(
            f"  tier {tier}: {format_bytes(before)} -> {format_bytes(after)} of {format_bytes(limit)}"
        )
    lines.extend(
        f"evict    {e.file.path} from tier {e.file.tier} ({format_bytes(e.file.bytes)}, score {e.score:.6g})"
        for e in plan.evictions
    )
    lines.extend(
        f"{'promote' if m.is_promotion else 'demote':8} {m.file.path} tier {m.file.tier} -> {m.target} "
        f"({format_bytes(m.file.bytes)}, {_why(m.score)})"
        for m in plan.moves
    )
    lines.extend(
        f"blocked  {m.file.path} tier {m.file.tier} -> {m.target} (no room in either order)"
        for m in plan.blocked
    )
    lines.extend(
        f"download {d.file.path} to tier {d.tier} ({format_bytes(d.file.bytes)}, {_why(d.score)})"
        for d in plan.downloads
    )
    return "\n".join(lines) + "\n"


def _why(score: float) -> str:
    """A step's reason for people: its score, or that the file is pinned (pins rank above every score)."""
    return "pinned" if score == math.inf else f"score {score:.6g}"
