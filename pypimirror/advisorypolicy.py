"""What the advisory policy does to a release file: nothing, flag it (yanked), or block it (403).

The rule, for ``advisories.mode``:

* ``off``: nothing, ``MAL-`` records included (advisories are only kept for the OSV API).
* ``flag``: every file of an affected version is served as yanked, the reason naming each
  advisory (``"<ID>: <summary>"``); a file of a malicious package (a ``MAL-`` record) is blocked.
* ``block``: every file of an affected version is flagged and blocked.

A waiver names an advisory (its ID or one of its aliases) and stops it from counting until the
end of its ``until`` day (UTC); after that the advisory applies again. Withdrawn records never
reach the policy (the queries leave them out). Matching is :meth:`pypimirror.osv.AffectedPackage.affects`.
"""

from __future__ import annotations

__all__ = ["AdvisoryPolicy", "Verdict", "VerdictCounts", "count_verdicts"]

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from packaging.utils import NormalizedName

from pypimirror.advisoryqueries import ApplicableAdvisory
from pypimirror.config import AdvisoriesConfig
from pypimirror.osv import version_key
from pypimirror.pagemodel import ProjectPage

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The advisories that apply to one version of a project, and whether its files are blocked."""

    advisories: tuple[ApplicableAdvisory, ...]
    blocked: bool

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(advisory.id for advisory in self.advisories)

    @property
    def reason(self) -> str:
        """The yank reason: ``"<ID>: <summary>"`` for each advisory, joined by ``"; "``."""
        return "; ".join(
            f"{advisory.id}: {advisory.summary}" if advisory.summary else advisory.id for advisory in self.advisories
        )


@dataclass(frozen=True, slots=True)
class VerdictCounts:
    """Files of the stored pages the policy flags (served as yanked) and, among them, blocks."""

    flagged: int = 0
    blocked: int = 0


class AdvisoryPolicy:
    """The configured policy over a set of applicable advisories, as of one day (for waivers)."""

    def __init__(self, settings: AdvisoriesConfig, advisories: Iterable[ApplicableAdvisory], today: date) -> None:
        self.mode = settings.mode
        waived = {waiver.id for waiver in settings.waivers if waiver.applies_on(today)}
        by_name: dict[NormalizedName, list[ApplicableAdvisory]] = defaultdict(list)
        for advisory in advisories:
            if advisory.id in waived or not waived.isdisjoint(advisory.aliases):
                continue
            by_name[advisory.package.name].append(advisory)
        self._by_name: Mapping[NormalizedName, Sequence[ApplicableAdvisory]] = dict(by_name)

    @property
    def projects(self) -> list[NormalizedName]:
        """The projects some advisory (not waived) names, sorted."""
        return sorted(self._by_name)

    def verdict(self, name: NormalizedName, version: str | None) -> Verdict | None:
        """What happens to the files of ``version`` of project ``name``; None: nothing."""
        if self.mode == "off" or version is None:
            return None
        candidates = self._by_name.get(name)
        if not candidates:
            return None
        key = version_key(version)
        found = tuple(advisory for advisory in candidates if advisory.package.affects_key(key))
        if not found:
            return None
        return Verdict(found, blocked=self.mode == "block" or any(advisory.is_malicious for advisory in found))

    def verdicts(self, page: ProjectPage) -> dict[str, Verdict]:
        """The verdict of each affected version of ``page``, by version as the page names it."""
        if self.mode == "off" or page.name not in self._by_name:
            return {}
        found = {}
        versions = {*page.versions, *(dist.version for dist in page.files if dist.version is not None)}
        for version in versions:
            verdict = self.verdict(page.name, version)
            if verdict is not None:
                found[version] = verdict
        return found


def count_verdicts(
    policy: AdvisoryPolicy, projects: Iterable[tuple[NormalizedName, Iterable[str | None]]]
) -> VerdictCounts:
    """How many files the policy flags and blocks, given each project's files as their versions.

    Each distinct version of a project is matched once, however many files it has.
    """
    flagged = blocked = 0
    for name, file_versions in projects:
        verdicts: dict[str | None, Verdict | None] = {}
        for version in file_versions:
            if version not in verdicts:
                verdicts[version] = policy.verdict(name, version)
            verdict = verdicts[version]
            if verdict is not None:
                flagged += 1
                blocked += verdict.blocked
    return VerdictCounts(flagged, blocked)
