"""Replay a trace of file requests against cache policies at several budgets, in simulated time.

Operators size a disk before buying it, and a policy change must prove itself before it
ships: both need the hit rate a policy would have reached on real traffic. The trace is first
packed into arrays (:func:`compact_trace`: file and client-network numbers, whole-second
times), then every policy replays it:

- ``seed`` and ``default`` are the production planner itself (:func:`~pypimirror.jobs.cache_plan.plan_cache`
  with ``cache.policy`` set to that name), run at each firing of ``schedule.cache`` over the
  votes recorded so far: one per file and client network (IPv4 /24, IPv6 /48) per
  ``dedup_window``, counted as the cache job counts them (``seed``: distinct networks within
  ``vote_window``, files with ``min_vote_count`` of them; ``default``: every vote within its
  counting window), ``filesize_limit``, the tiers in order. What a plan downloads is held from its instant on.
  The budget under test replaces the tiers' limits: each tier gets the budget's share that
  its configured limit has of all tiers' limits (one tier gets the whole budget). Given the
  stored pages' files, ``default`` also prefetches new releases as the cache job does
  (:mod:`~pypimirror.jobs.cache_successors`): a file can be prefetched at an instant at or
  after its upload time, and a prefetched file no request asks for costs its bytes upstream.
- ``lru`` stores every missed file at its request and evicts the least recently requested
  files until it fits; a file larger than the budget is never stored.
- ``static-greedy`` knows the whole trace: files by requests per byte, descending (ties:
  smaller, then path), taken first-fit while they fit, held from the first request on. It is
  the best a static cache can do, the bar the others are measured against.

A hit is a request for a file the cache holds at that moment. Upstream bytes are the bytes the
cache itself fetched (each download of ``seed``/``default``, each insertion of ``lru``, each
chosen file once for ``static-greedy``); misses served by redirect or proxy are not counted,
as in 302 mode they never cross the mirror's upstream link. Files the stored pages do not
list are counted apart and left out of every figure.

The votes are kept once per way of counting them for all planner runs, in memory (no
database): per (file, network) its counted votes, per file its number of networks or votes
within the window.
"""

from __future__ import annotations

__all__ = [
    "PLANNER_POLICIES",
    "POLICIES",
    "CompactTrace",
    "PolicyResult",
    "compact_trace",
    "fork_is_safe",
    "planning_times",
    "release_listing",
    "simulate",
    "tier_budgets",
]

import gc
import ipaddress
import logging
import multiprocessing
import os
import threading
from array import array
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from multiprocessing.connection import Connection
from typing import Final, Protocol

from pypimirror.jobs.cache_plan import CachePlan, CandidateRanking, RemoteFile, plan_cache
from pypimirror.jobs.cache_successors import PREFETCH_POLICIES, ReleaseIndex, successor_votes

from pypimirror.clientip import network_prefix
from pypimirror.config import CacheConfig, CachePolicy, Schedule
from pypimirror.cron import make_trigger
from pypimirror.inventory import LocalFile
from pypimirror.pagescan import ListedFile

logger = logging.getLogger(__name__)

PLANNER_POLICIES: tuple[CachePolicy, ...] = ("seed", "default")
POLICIES: tuple[str, ...] = (*PLANNER_POLICIES, "lru", "static-greedy")
#: Below this many requests the planner states replay in this process: a fork costs more than it saves.
_PARALLEL_REQUESTS: Final = 200_000


class RequestLike(Protocol):
    """One request of a trace: when (epoch seconds), from which client address, for which file."""

    @property
    def time(self) -> float: ...

    @property
    def client(self) -> str: ...

    @property
    def path(self) -> str: ...


class ListedLike(Protocol):
    """A file the stored pages list: its path under ``packages/`` and its size."""

    @property
    def path(self) -> str: ...

    @property
    def size(self) -> int: ...


@dataclass(slots=True)
class CompactTrace:
    """The listed requests as parallel arrays, in time order, and what was left out.

    ``files[i]`` is an index into ``paths``/``sizes``, ``nets[i]`` numbers the client network,
    ``times[i]`` is whole seconds. Requests from a client whose address does not parse count
    (they are downloads) but cast no vote, as in the server (``nets[i]`` is -1).
    """

    paths: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    times: array[int] = field(default_factory=lambda: array("q"))
    files: array[int] = field(default_factory=lambda: array("i"))
    nets: array[int] = field(default_factory=lambda: array("i"))
    networks: int = 0
    unlisted_requests: int = 0
    unlisted_files: int = 0

    @property
    def requests(self) -> int:
        return len(self.files)

    @property
    def distinct_files(self) -> int:
        """Listed files requested at least once."""
        return len(self.paths)

    @property
    def distinct_bytes(self) -> int:
        return sum(self.sizes)

    @property
    def requested_bytes(self) -> int:
        sizes = self.sizes
        return sum(sizes[f] for f in self.files)


@dataclass(frozen=True, slots=True)
class PolicyResult:
    """One policy at one budget: requests and bytes, served from the cache and fetched for it."""

    policy: str
    budget: int
    requests: int
    hits: int
    requested_bytes: int
    hit_bytes: int
    upstream_bytes: int

    @property
    def request_hit_rate(self) -> float:
        return self.hits / self.requests if self.requests else 0.0

    @property
    def byte_hit_rate(self) -> float:
        return self.hit_bytes / self.requested_bytes if self.requested_bytes else 0.0


def compact_trace(requests: Iterable[RequestLike], listed: Mapping[str, ListedLike]) -> CompactTrace:
    """Pack ``requests`` (in time order) for replay; files ``listed`` does not hold are counted apart."""
    trace = CompactTrace()
    file_ids: dict[str, int] = {}
    prefixes: dict[str, int] = {}  # network prefix -> network number
    heads: dict[str, int] = {}  # a valid address up to its last '.' -> network number
    unlisted: set[str] = set()
    times, files, nets = trace.times, trace.files, trace.nets
    paths, sizes = trace.paths, trace.sizes
    for request in requests:
        path = request.path
        fid = file_ids.get(path)
        if fid is None:
            entry = listed.get(path)
            if entry is None:
                trace.unlisted_requests += 1
                unlisted.add(path)
                continue
            fid = file_ids[path] = len(paths)
            paths.append(path)
            sizes.append(entry.size)
        times.append(int(request.time))
        files.append(fid)
        nets.append(_network_id(request.client, prefixes, heads))
    trace.networks = len(prefixes)
    trace.unlisted_files = len(unlisted)
    return trace


#: The last parts of a dotted address that :mod:`ipaddress` accepts: 0-255, no sign, no leading zero.
_OCTETS: Final = frozenset(str(n) for n in range(256))


def _network_id(client: str, prefixes: dict[str, int], heads: dict[str, int]) -> int:
    """The number of ``client``'s vote network (one per /24 or /48, numbered in ``prefixes``), -1 if it is no address.

    A trace holds hundreds of thousands of addresses, so an address with a dot (IPv4, or IPv6
    ending in one) is parsed once per ``head`` (the text before its last dot): whether such an
    address is valid depends on its last part only once its head was seen valid, and its
    network not at all (the last 8 bits lie outside a /24 and a /48).
    """
    head, dot, last = client.rpartition(".")
    plain = bool(dot) and last in _OCTETS
    if plain:
        net = heads.get(head)
        if net is not None:
            return net
    try:
        prefix = network_prefix(ipaddress.ip_address(client.strip()))
    except ValueError:
        return -1
    net = prefixes.setdefault(prefix, len(prefixes))
    if plain:
        heads[head] = net
    return net


def tier_budgets(budget: int, limits: Sequence[int]) -> list[int]:
    """``budget`` spread over the tiers in proportion to their configured limits.

    The last tier gets what rounding leaves, so the parts add up to ``budget``; tiers that all
    have limit 0 share it equally.
    """
    total = sum(limits)
    weights = list(limits) if total > 0 else [1] * len(limits)
    total = sum(weights)
    parts = [budget * w // total for w in weights[:-1]]
    parts.append(budget - sum(parts))
    return parts


def planning_times(schedule: Schedule, start: int, end: int) -> Iterator[int]:
    """The instants the cache job runs between ``start`` and ``end``: at start, then on schedule.

    An interval fires every ``interval`` after ``start`` (as the scheduler's ``run_on_start``
    followed by its interval trigger); a cron expression at its firing times (UTC), without
    jitter.
    """
    yield start
    if schedule.interval is not None:
        step = max(int(schedule.interval.total_seconds()), 1)
        moment = start + step
        while moment <= end:
            yield moment
            moment += step
        return
    trigger = make_trigger(cron=schedule.cron)
    previous: datetime | None = None
    now = datetime.fromtimestamp(start, timezone.utc)
    while True:
        fire = trigger.get_next_fire_time(previous, now)
        if fire is None or fire.timestamp() > end:
            return
        moment = int(fire.timestamp())
        if moment > start:
            yield moment
        previous = fire
        now = datetime.fromtimestamp(moment + 1, timezone.utc)


def simulate(
    trace: CompactTrace,
    budgets: Sequence[int],
    policies: Sequence[str],
    *,
    cache: CacheConfig,
    schedule: Schedule,
    workers: int | None = None,
    listed: Mapping[str, ListedFile] | None = None,
) -> list[PolicyResult]:
    """Replay ``trace`` for every policy at every budget; results by budget, then in ``policies`` order.

    ``listed`` are the stored pages' files (:func:`~pypimirror.pagescan.scan_listed_files`, or
    the part :func:`release_listing` keeps): with them the policies that prefetch new releases
    do so; without them none does.

    The planner policies, by far the slowest part, replay in up to ``workers`` processes
    (forked, so the trace is shared, not copied); by default one per CPU for a trace of
    :data:`_PARALLEL_REQUESTS` requests or more, else one. The results are the same whatever
    the number: each process replays whole states.
    """
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown policies {', '.join(unknown)}: choose from {', '.join(POLICIES)}")
    requested = trace.requested_bytes
    results: dict[tuple[str, int], PolicyResult] = {}

    def replay_references() -> None:
        for budget in budgets:
            if "lru" in policies:
                hits, hit_bytes, upstream = _replay_lru(trace, budget)
                results[("lru", budget)] = PolicyResult("lru", budget, trace.requests, hits, requested, hit_bytes, upstream)
            if "static-greedy" in policies:
                hits, hit_bytes, upstream = _static_greedy(trace, budget)
                results[("static-greedy", budget)] = PolicyResult(
                    "static-greedy", budget, trace.requests, hits, requested, hit_bytes, upstream
                )

    planners = [p for p in PLANNER_POLICIES if p in policies]
    if planners and trace.requests:
        states = [
            _PlannerState(policy, budget, tier_budgets(budget, [t.size_limit for t in cache.tiers]), trace)
            for budget in budgets
            for policy in planners
        ]
        if listed is not None and any(p in PREFETCH_POLICIES for p in planners):
            window = int(cache.vote_window.total_seconds())
            prefetch = _ReleasePrefetch(trace, listed, window)
            del listed  # the index holds what it needs; with the caller's reference gone, freed here
            for state in states:
                if state.policy in PREFETCH_POLICIES:
                    state.prefetch = prefetch
        if workers is None:
            workers = _default_workers(trace, len(states))
        # The reference policies replay in this process while the children replay planners.
        with _cycle_collector_paused():
            _replay_planners_in_parallel(trace, states, cache, schedule, workers, meanwhile=replay_references)
        for state in states:
            results[(state.policy, state.budget)] = state.result(trace.requests, requested)
    else:
        replay_references()
    for budget in budgets:
        for policy in planners:
            results.setdefault((policy, budget), PolicyResult(policy, budget, 0, 0, 0, 0, 0))
    return [results[(policy, budget)] for budget in budgets for policy in policies]


@contextmanager
def _cycle_collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off, in this process and the children it forks meanwhile.

    A replay keeps millions of objects for a month (votes, rankings, cache states) and frees
    what it drops by reference counting: the collector's full passes over them find nothing
    (none on the bench's 2M-request trace) and cost several percent of the time. In a forked
    child they would also write to every object inherited at the fork, and so copy the
    parent's memory into the child page by page.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def fork_is_safe() -> bool:
    """Whether this process may fork helpers: the platform can, and no other thread runs.

    A lock another thread holds at the fork would stay held in the child forever.
    """
    return threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods()


def _default_workers(trace: CompactTrace, states: int) -> int:
    """One process per CPU (at most one per state) for a large trace, where the fork pays off; else one."""
    if trace.requests < _PARALLEL_REQUESTS or not fork_is_safe():
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cpus, states))


def _replay_planners_in_parallel(
    trace: CompactTrace,
    states: Sequence[_PlannerState],
    cache: CacheConfig,
    schedule: Schedule,
    workers: int,
    *,
    meanwhile: Callable[[], None],
) -> None:
    """:func:`_replay_planners` with the states dealt out to ``workers`` processes (this one included),
    and ``meanwhile`` run in this one.

    Each forked child replays its share of the states, votes included, and sends back their
    counters; this process replays the first share meanwhile, reports the progress, then runs
    ``meanwhile`` before it waits for the children (whose share, ``default``'s, takes longest).
    """
    shares = [list(states[n::workers]) for n in range(min(max(workers, 1), len(states)))]
    if len(shares) == 1:
        _replay_planners(trace, states, cache, schedule)
        meanwhile()
        return
    context = multiprocessing.get_context("fork")
    children = []
    for share in shares[1:]:
        receiver, sender = context.Pipe(duplex=False)
        child = context.Process(
            target=_replay_in_child, args=(trace, share, cache, schedule, sender), name="simulate-planner",
            daemon=True,
        )
        child.start()
        sender.close()
        children.append((child, receiver, share))
    try:
        _replay_planners(trace, shares[0], cache, schedule)
        meanwhile()
        for child, receiver, share in children:
            try:
                outcome: list[tuple[int, int, int]] | str = receiver.recv()
            except EOFError:
                child.join()
                raise RuntimeError(f"a simulation process ended without its results (exit code {child.exitcode})") from None
            if isinstance(outcome, str):
                raise RuntimeError(f"a simulation process failed: {outcome}")
            for state, (hits, hit_bytes, upstream) in zip(share, outcome, strict=True):
                state.hits, state.hit_bytes, state.upstream = hits, hit_bytes, upstream
    finally:
        for child, receiver, _share in children:
            receiver.close()
            if child.is_alive():
                child.terminate()
            child.join()


def _replay_in_child(
    trace: CompactTrace, states: list[_PlannerState], cache: CacheConfig, schedule: Schedule, results: Connection
) -> None:
    """A forked process's part: replay ``states`` and send their counters (or what went wrong)."""
    try:
        _replay_planners(trace, states, cache, schedule, report=False)
        results.send([(state.hits, state.hit_bytes, state.upstream) for state in states])
    except Exception as exc:  # the parent raises it, with its message
        results.send(f"{type(exc).__name__}: {exc}")
    finally:
        results.close()


def _replay_lru(trace: CompactTrace, budget: int) -> tuple[int, int, int]:
    """Hits, hit bytes and inserted bytes of an LRU cache of ``budget`` bytes."""
    sizes = trace.sizes
    held: OrderedDict[int, None] = OrderedDict()
    used = hits = hit_bytes = upstream = 0
    move_to_end, popitem = held.move_to_end, held.popitem
    for fid in trace.files:
        if fid in held:
            move_to_end(fid)
            hits += 1
            hit_bytes += sizes[fid]
            continue
        size = sizes[fid]
        if size > budget:
            continue
        held[fid] = None
        used += size
        upstream += size
        while used > budget:
            used -= sizes[popitem(last=False)[0]]
    return hits, hit_bytes, upstream


def _static_greedy(trace: CompactTrace, budget: int) -> tuple[int, int, int]:
    """Hits, hit bytes and stored bytes of the best static choice by requests per byte."""
    counts = Counter(trace.files)
    sizes, paths = trace.sizes, trace.paths
    order = sorted(counts, key=lambda f: (-counts[f] / max(sizes[f], 1), sizes[f], paths[f]))
    room = budget
    hits = hit_bytes = stored = 0
    for fid in order:
        size = sizes[fid]
        if size <= room:
            room -= size
            stored += size
            hits += counts[fid]
            hit_bytes += counts[fid] * size
    return hits, hit_bytes, stored


class _PlannerState:
    """What one planner policy at one budget holds, and its counters."""

    def __init__(self, policy: CachePolicy, budget: int, limits: list[int], trace: CompactTrace) -> None:
        self.policy = policy
        self.budget = budget
        self.limits = limits
        self.local: dict[str, LocalFile] = {}
        self.held = bytearray(trace.distinct_files)
        self.hits = self.hit_bytes = self.upstream = 0
        self.prefetch: _ReleasePrefetch | None = None
        # Kept between the planner's runs: each ranks again only the files that changed, those
        # the last plan moved and the new releases it lent votes to, collected here.
        self.ranking = CandidateRanking(policy)
        self.changed: set[str] = set()
        self.successors: dict[str, int] = {}  # the new releases of the last plan, with their lent votes

    def result(self, requests: int, requested: int) -> PolicyResult:
        return PolicyResult(self.policy, self.budget, requests, self.hits, requested, self.hit_bytes, self.upstream)


def _replay_planners(
    trace: CompactTrace, states: Sequence[_PlannerState], cache: CacheConfig, schedule: Schedule, *, report: bool = True
) -> None:
    """One pass over the trace: votes as the server records them, the planner at each instant.

    The cache changes only at planning instants, so the hits of the requests between two
    instants are counted per file, once per state, when the interval ends. Each state plans as
    the cache job does, over the votes as its policy counts them.
    """
    times, files, sizes, paths = trace.times, trace.files, trace.sizes, trace.paths
    # One vote store per way of counting (CacheConfig.counting_of): the states of one policy share it.
    counting = {state.policy: cache.counting_of(state.policy) for state in states}
    votes_in = {way: _Votes(trace, cache, distinct=way.distinct, floor=way.floor) for way in set(counting.values())}
    release_window = int(cache.vote_window.total_seconds())  # the release prefetch's, as in the cache job
    candidates = _Candidates(paths, sizes, cache.filesize_limit)
    instants = list(planning_times(schedule, times[0], times[-1]))
    start = 0
    for number, instant in enumerate(instants, start=1):
        end = _first_at_or_after(times, instant, start)
        for way, votes in votes_in.items():
            votes.changed.clear()
            votes.count(start, end)
            votes.expire(instant - int(way.window.total_seconds()))
        _settle(files, sizes, start, end, states)
        start = end
        for state in states:
            store = votes_in[counting[state.policy]]
            local = state.local
            plan_votes: Mapping[str, int] = store.popular_paths
            # What may differ from the state's previous plan: the files whose votes changed,
            # those its last plan moved, and the new releases whose lent votes came, changed
            # or went. The kept ranking looks only at those, and at the wanted files among them.
            changed = state.changed | store.changed
            prefetch = state.prefetch
            if prefetch is not None:
                successors = successor_votes(
                    prefetch.index, local, plan_votes, since=instant - release_window, now=instant
                )
                previous = state.successors
                changed.update(path for path, n in successors.items() if previous.get(path) != n)
                changed.update(path for path in previous if path not in successors)
                state.successors = successors
                if successors:
                    plan_votes = _LentVotes(successors, plan_votes)
            wanted = [
                candidate
                for path in changed
                if path in plan_votes and path not in local
                and (candidate := candidates.wanted(path, prefetch)) is not None
            ]
            state.changed = set()  # from here on, what this plan changes (_apply)
            plan = plan_cache(
                local, wanted, plan_votes, state.limits, policy=state.policy, ranking=state.ranking, changed=changed
            )
            _apply(state, plan, candidates.number)
        if report and number % 24 == 0:
            logger.info("simulate: planned %d of %d instants", number, len(instants))
    _settle(files, sizes, start, len(files), states)


class _Votes:
    """The votes of the trace so far, kept as the vote recorder and the database keep them.

    Per (file, network) its number of counted votes in the window, and for the last few minutes
    the time of its last counted vote: a vote less than ``dedup_window`` after it is not counted
    (nor is its time), exactly like :func:`pypimirror.db.record_votes`. (A month holds millions
    of pairs; a count, almost always below 257, is an int Python keeps once, a time is not.)
    Per file its number of networks with a counted vote inside the window (``distinct``, as
    ``seed`` counts) or of counted votes (as ``default`` does), and the files with at least
    ``floor`` with that number (by file number and by path, as the planner takes them), all
    kept up to date vote by vote: a month holds a few hundred thousand voted files, too many to
    collect again at every planning instant.
    """

    def __init__(self, trace: CompactTrace, cache: CacheConfig, *, distinct: bool, floor: int) -> None:
        self.trace = trace
        self.networks = max(trace.networks, 1)
        self.dedup = max(int(cache.dedup_window.total_seconds()), 1)
        self.distinct = distinct
        self.floor = floor
        self.counted: dict[int, int] = {}  # file * networks + network -> its counted votes in the window
        self.recent: dict[int, int] = {}  # the same key -> time of its last counted vote, within dedup_window
        self.per_file: dict[int, int] = {}  # file -> its networks (distinct) or votes in the window
        # The files with at least ``floor`` of them, with that number (with a floor of 1 all of
        # them: the same dict).
        self.popular_files: dict[int, int] = self.per_file if floor == 1 else {}
        self.popular_paths: dict[str, int] = {}
        # The paths whose number changed (or that joined or left those files) since the caller
        # last cleared it: what a kept ranking must look at again.
        self.changed: set[str] = set()
        # The counted votes in time order, from index ``first`` on: (file, network) key and time
        # (seconds since the trace's first request). Arrays, not deques of int objects: a month
        # of traffic counts millions of votes.
        self.keys = array("q")
        self.times = array("i")
        self.origin = trace.times[0] if trace.requests else 0
        self.first = 0

    def count(self, start: int, end: int) -> None:
        """Record the votes of requests ``start:end`` (requests without a network cast none)."""
        files, nets, times = self.trace.files, self.trace.nets, self.trace.times
        networks, dedup, floor, distinct, paths = self.networks, self.dedup, self.floor, self.distinct, self.trace.paths
        counted, recent = self.counted, self.recent
        per_file, popular, popular_paths = self.per_file, self.popular_files, self.popular_paths
        add_key, add_time, origin, touch = self.keys.append, self.times.append, self.origin, self.changed.add
        for i in range(start, end):
            net = nets[i]
            if net < 0:
                continue
            fid = files[i]
            t = times[i]
            key = fid * networks + net
            previous = recent.get(key)
            if previous is not None and previous > t - dedup:
                continue
            recent[key] = t
            votes = counted.get(key)
            counted[key] = 1 if votes is None else votes + 1
            if votes is None or not distinct:
                n = per_file.get(fid, 0) + 1
                per_file[fid] = n
                if n >= floor:
                    path = paths[fid]
                    popular[fid] = popular_paths[path] = n
                    touch(path)
            add_key(key)
            add_time(t - origin)
        if end > start:  # a time older than dedup_window before the last request blocks no later vote
            cutoff = times[end - 1] - dedup
            self.recent = {key: t for key, t in recent.items() if t > cutoff}

    def expire(self, since: int) -> None:
        """Forget votes older than ``since``: a network whose newest vote is older stops counting."""
        keys, times, counted, recent, per_file = self.keys, self.times, self.counted, self.recent, self.per_file
        networks, floor, distinct, popular, popular_paths = self.networks, self.floor, self.distinct, self.popular_files, self.popular_paths
        paths, touch = self.trace.paths, self.changed.add
        first, end = self.first, len(times)
        since -= self.origin
        while first < end and times[first] < since:
            key = keys[first]
            first += 1
            votes = counted[key] - 1
            if votes:
                counted[key] = votes
                if distinct:  # the network still votes for the file
                    continue
            else:  # the network's last vote for the file left the window
                del counted[key]
                recent.pop(key, None)
            fid = key // networks
            n = per_file[fid] - 1
            if n:
                per_file[fid] = n
            else:
                del per_file[fid]
            if n >= floor:
                popular[fid] = popular_paths[paths[fid]] = n
                touch(paths[fid])
            elif n == floor - 1:
                if popular is not per_file:
                    del popular[fid]
                del popular_paths[paths[fid]]
                touch(paths[fid])
        if first > end // 2:  # drop the expired half: each vote is moved about once
            del keys[:first]
            del times[:first]
            first = 0
        self.first = first


def _first_at_or_after(times: array[int], instant: int, start: int) -> int:
    """The first index from ``start`` whose time is ``instant`` or later (binary search)."""
    lo, hi = start, len(times)
    while lo < hi:
        mid = (lo + hi) // 2
        if times[mid] < instant:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _settle(files: array[int], sizes: list[int], start: int, end: int, states: Sequence[_PlannerState]) -> None:
    """Count the hits of requests ``start:end``, during which no state's cache changed."""
    if start >= end:
        return
    requested = Counter(files[start:end])
    for state in states:
        held = state.held
        hits = hit_bytes = 0
        for fid, n in requested.items():
            if held[fid]:
                hits += n
                hit_bytes += n * sizes[fid]
        state.hits += hits
        state.hit_bytes += hit_bytes


def _apply(state: _PlannerState, plan: CachePlan, fid_of: Mapping[str, int]) -> None:
    """Carry out a plan in the simulated tiers: evictions, moves, downloads (counted upstream).

    A prefetched file the trace never requests has no number: it takes room, nothing else.
    """
    local, held, changed = state.local, state.held, state.changed
    for eviction in plan.evictions:
        path = eviction.file.path
        changed.add(path)
        del local[path]
        fid = fid_of.get(path)
        if fid is not None:
            held[fid] = 0
    for move in plan.moves:
        f = move.file
        changed.add(f.path)
        local[f.path] = LocalFile(f.path, move.target, f.size)
    for download in plan.downloads:
        r = download.file
        changed.add(r.path)
        local[r.path] = LocalFile(r.path, download.tier, r.size)
        fid = fid_of.get(r.path)
        if fid is not None:
            held[fid] = 1
        state.upstream += r.size


def release_listing(trace: CompactTrace, listed: Mapping[str, ListedFile], window: int) -> dict[str, ListedFile]:
    """The part of ``listed`` the release prefetch of a replay of ``trace`` can use.

    Only a file uploaded within ``window`` (``cache.vote_window`` in seconds, as for the cache
    job) before a
    planning instant can succeed a cached one: the trace's own files (which can be cached) and
    the files of their projects uploaded during it are all it needs, a small part of a whole
    index, which the caller can then drop. :func:`simulate` gives the same results with either.
    """
    requested = [entry for entry in map(listed.get, trace.paths) if entry is not None]
    files = {entry.path: entry for entry in requested}
    if not requested:
        return files
    projects = {entry.project for entry in requested}
    first, last = trace.times[0] - window, trace.times[-1]
    for f in listed.values():
        if f.project in projects and f.upload_time is not None and first < f.upload_time <= last:
            files.setdefault(f.path, f)
    return files


class _Candidates:
    """The wanted-file record of each path a replay's plans may be given, the same object at
    every instant (so a kept ranking sees it unchanged): the trace's files, and through the
    release prefetch new releases no request asks for."""

    def __init__(self, paths: Sequence[str], sizes: Sequence[int], filesize_limit: int | None) -> None:
        #: The file number of each of the trace's paths.
        self.number = {path: fid for fid, path in enumerate(paths)}
        self._filesize_limit = filesize_limit
        self._wanted = [self._record(path, size) for path, size in zip(paths, sizes, strict=True)]
        self._released: dict[str, RemoteFile | None] = {}  # new releases, made when first asked for

    def wanted(self, path: str, prefetch: _ReleasePrefetch | None) -> RemoteFile | None:
        """The record of ``path`` if a plan may fetch it (None when too large, or not a file the
        trace or the prefetch knows)."""
        fid = self.number.get(path)
        if fid is not None:
            return self._wanted[fid]
        if prefetch is None:
            return None
        if path not in self._released:
            self._released[path] = self._record(path, prefetch.sizes[path])
        return self._released[path]

    def _record(self, path: str, size: int) -> RemoteFile | None:
        """None for a file larger than ``filesize_limit``: the cache job's phase B drops those."""
        limit = self._filesize_limit
        return RemoteFile(path, size, "") if limit is None or size <= limit else None


class _ReleasePrefetch:
    """Release prefetch in the replay, over the stored pages' files of the projects the trace asks for.

    Shared by the states of the policies that prefetch: the index, and the sizes of its files.
    """

    def __init__(self, trace: CompactTrace, listed: Mapping[str, ListedFile], window: int) -> None:
        files = release_listing(trace, listed, window)
        self.index = ReleaseIndex(files.values())
        self.sizes = {path: f.size for path, f in files.items()}
        logger.info("simulate: release prefetch over %d listed wheels and sdists", len(self.index))


class _LentVotes(Mapping[str, int]):
    """The planner's votes with the successors' (lent by their predecessors) on top.

    A view, not a merged copy: copying a month's votes at every planning instant costs more
    than the few lookups a kept ranking makes in them.
    """

    def __init__(self, successors: Mapping[str, int], votes: Mapping[str, int]) -> None:
        self._successors = successors
        self._votes = votes

    def __getitem__(self, path: str) -> int:
        lent = self._successors.get(path)
        return self._votes[path] if lent is None else lent

    def __iter__(self) -> Iterator[str]:
        yield from self._successors
        yield from (path for path in self._votes if path not in self._successors)

    def __len__(self) -> int:
        return len(self._votes) + sum(1 for path in self._successors if path not in self._votes)
