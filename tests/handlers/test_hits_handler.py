"""Which package-file requests count in the live hit rate, and as what, over real HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest

from pypimirror.app import Services
from pypimirror.queries import HitCount
from pypimirror.hitrate import HitCounter
from pypimirror.pagecache import PageCache

HASH = "ab" * 2 + "cd" * 28
RELPATH = f"ab/cd/{HASH}/demo-1.0-py3-none-any.whl"
MISSING = f"12/34/{HASH}/gone-2.0.tar.gz"
URL = f"/pypi/packages/{RELPATH}"
PIP_UA = "pip/26.0"
DATA = b"w" * 5000


@pytest.fixture
def hits() -> HitCounter:
    return HitCounter(is_bot=lambda agent: "bot" in agent.lower())


@pytest.fixture
def services(pages: PageCache, votes, access_log, hits: HitCounter) -> Services:
    return Services(pages=pages, votes=votes, access_log=access_log, hits=hits)


@pytest.fixture
def wheel(tmp_path: Path) -> Path:
    path = tmp_path / "cold" / RELPATH  # any tier is local
    path.parent.mkdir(parents=True)
    path.write_bytes(DATA)
    (path.parent / (path.name + ".metadata")).write_bytes(b"Metadata-Version: 2.1\n")
    return path


def taken(hits: HitCounter) -> list[tuple[str, int, int]]:
    counts, _ = hits.take()
    return sorted((c.outcome, c.requests, c.bytes) for c in counts)


@pytest.mark.gen_test
async def test_a_local_download_and_a_redirect_count_with_the_body_bytes_sent(fetch, wheel, hits):
    assert (await fetch(URL, headers={"User-Agent": PIP_UA})).code == 200
    assert (await fetch(URL, headers={"Range": "bytes=0-99"})).code == 206
    assert (await fetch(f"/pypi/packages/{MISSING}")).code == 302
    counts, redirected = hits.take()
    assert sorted((c.outcome, c.requests, c.bytes) for c in counts) == [("local", 2, 5100), ("redirect", 1, 0)]
    assert [path for (_, path) in redirected] == [MISSING]  # sized from the database at flush time
    assert all(isinstance(c, HitCount) and c.hour_start % 3600 == 0 for c in counts)


@pytest.mark.gen_test
async def test_head_metadata_bots_and_failures_do_not_count(fetch, wheel, hits, votes):
    assert (await fetch(URL, method="HEAD")).code == 200
    assert (await fetch(URL + ".metadata")).code == 200
    assert (await fetch(f"/pypi/packages/{MISSING}.metadata")).code == 302
    assert (await fetch(URL, headers={"User-Agent": "Mozilla/5.0 (compatible; Googlebot/2.1)"})).code == 200
    assert (await fetch(URL, headers={"Range": "bytes=99999-"})).code == 416
    assert (await fetch("/pypi/packages/ab/cd/not-a-hash/x.whl")).code == 404
    assert taken(hits) == []
    assert hits.totals() == {"local": (0, 0), "redirect": (0, 0), "proxy": (0, 0)}
    assert len(votes.offers) == 2  # the bot's GET and the 416 were offered; the vote recorder refuses bots


@pytest.mark.gen_test
async def test_a_conditional_get_answered_304_counts_as_local_without_bytes(fetch, wheel, hits):
    first = await fetch(URL)
    again = await fetch(URL, headers={"If-None-Match": first.headers["ETag"]})
    assert again.code == 304
    assert taken(hits) == [("local", 2, 5000)]
