"""The view rules (pure) and the bounded store of rendered view pages."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from packaging.utils import NormalizedName

from pypimirror.asof import AsOfViews, HistoryAccess
from pypimirror.db import Database
from pypimirror.pagecache import CachedPage
from pypimirror.pages import DistFile, ProjectPage, render_project_json
from pypimirror.viewpages import ViewPages, view_json_document
from pypimirror.views import AgePolicy, ViewError, ViewResolver, parse_age, parse_moment

T0 = datetime(2026, 6, 1, tzinfo=UTC)


def dist(version: str, uploaded: str | None, *, yanked: bool | str = False) -> DistFile:
    filename = f"demo-{version}-py3-none-any.whl"
    return DistFile(filename=filename, url=f"/pypi/packages/ab/cd/ef/{filename}", sha256=None, requires_python=None,
                    size=1, upload_time=uploaded, yanked=yanked, core_metadata=False, provenance=None, version=version)


def page(*files: DistFile, name: str = "demo", status: str | None = None) -> ProjectPage:
    return ProjectPage(name=NormalizedName(name), display_name=name, last_serial=5, files=files,
                       versions=tuple(f.version for f in files if f.version) + ("0.1",), status=status)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30m", timedelta(minutes=30)), ("12h", timedelta(hours=12)), ("7d", timedelta(days=7)),
     ("2w", timedelta(days=14)), ("1w3d", timedelta(days=10)), ("1d12h", timedelta(hours=36))],
)
def test_ages_read_weeks_days_hours_and_minutes(text, expected):
    assert parse_age(text) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [("7", "'7' is not a duration (expected e.g. 30m, 12h, 7d, 2w)"),
     ("7D", "'7D' is not a duration (expected e.g. 30m, 12h, 7d, 2w)"),
     ("-1d", "'-1d' is not a duration (expected e.g. 30m, 12h, 7d, 2w)"),
     ("0w", "'0w' is not longer than 0 (expected e.g. 30m, 12h, 7d, 2w)"),
     ("", "'' is not a duration (expected e.g. 30m, 12h, 7d, 2w)"),
     ("99999999w", "'99999999w' is too long (at most 3650d)"),
     ("3651d", "'3651d' is too long (at most 3650d)"),
     (7, "7 is not a duration (expected e.g. 30m, 12h, 7d, 2w)")],
)
def test_bad_ages_are_refused_in_one_line(raw, message):
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
        parse_age(raw)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2026-06-01", T0), ("2026-06-01T00:00:00Z", T0), ("2026-06-01t02:00:00+02:00", T0),
     ("2026-05-31T22:00:00-02:00", T0), ("2026-06-01T00:00:00.123456789Z", T0 + timedelta(microseconds=123456))],
)
def test_moments_are_rfc_3339_or_plain_dates_in_utc(text, expected):
    assert parse_moment(text) == expected


@pytest.mark.parametrize("text", ["2026-6-1", "2026-06-01T00:00:00", "2026-06-01T25:00:00Z", "now", "2026-02-30"])
def test_bad_moments_are_refused(text):
    with pytest.raises(ValueError, match=repr(text)):
        parse_moment(text)


def test_a_cooldown_keeps_old_files_and_says_when_a_new_one_comes_of_age():
    policy = AgePolicy(label="+cooldown/7d", min_age=timedelta(days=7))
    old, new, undated = dist("1.0", "2026-05-01T00:00:00Z"), dist("2.0", "2026-05-30T00:00:00Z"), dist("3.0", None)
    viewed = policy.apply(page(old, new, undated), T0.timestamp())
    assert viewed.page.files == (old,)
    assert viewed.page.versions == ("1.0",)  # 0.1 has no file, 2.0 and 3.0 none left
    assert viewed.refused == {
        new.filename: "uploaded 2026-05-30T00:00:00Z, less than 7d ago (allowed from 2026-06-06T00:00:00Z)",
        undated.filename: "it has no upload time, so its age cannot be told",
    }
    assert viewed.changes_at == datetime(2026, 6, 6, tzinfo=UTC).timestamp()
    assert viewed.changed_at == datetime(2026, 5, 8, tzinfo=UTC).timestamp()


def test_exempt_projects_skip_the_limits_but_not_the_upload_time_rule():
    policy = AgePolicy(label="+view/s", min_age=timedelta(days=7), not_after=T0, exempt=("internal-*",))
    fresh, undated = dist("2.0", "2026-07-01T00:00:00Z"), dist("3.0", None)
    viewed = policy.apply(page(fresh, undated, name="internal-tool"), T0.timestamp())
    assert viewed.page.files == (fresh,)
    assert policy.apply(page(fresh, name="public"), T0.timestamp()).page.files == ()


def test_the_cut_off_is_inclusive_and_explained():
    policy = AgePolicy(label="+view/frozen", not_after=T0)
    at, after = dist("1.0", "2026-06-01T00:00:00Z"), dist("1.1", "2026-06-01T00:00:00.5Z")
    viewed = policy.apply(page(at, after), T0.timestamp() + 10**6)
    assert viewed.page.files == (at,)
    assert viewed.refused[after.filename] == (
        "uploaded 2026-06-01T00:00:00Z, after this view's cut-off 2026-06-01T00:00:00Z"
    )


def test_the_resolver_knows_cooldowns_and_named_views_only():
    stable = AgePolicy(label="+view/stable", min_age=timedelta(days=1))
    resolver = ViewResolver({"stable": stable})
    assert resolver.resolve("view", "stable") is stable
    assert resolver.resolve("cooldown", "2w") == AgePolicy(label="+cooldown/2w", min_age=timedelta(days=14))
    with pytest.raises(ViewError, match=r"^no view named other \(known: stable\)$"):
        resolver.resolve("view", "other")
    with pytest.raises(ViewError, match=r"^no kind of view named x\\x0a$"):
        resolver.resolve("x\n", "1d")


def test_json_api_documents_keep_only_the_viewed_files_with_their_yank_state():
    kept = dist("1.0", "2026-05-01T00:00:00Z", yanked="broken")
    viewed = page(kept)
    entry = {"filename": kept.filename, "url": "https://files.example.org/packages/ab/cd/ef/" + kept.filename,
             "yanked": False, "yanked_reason": None}
    gone = {**entry, "filename": "demo-2.0-py3-none-any.whl"}
    document = {"info": {"version": "2.0"}, "releases": {"1.0": [entry], "2.0": [gone]}, "urls": [gone]}
    shown = json.loads(view_json_document(json.dumps(document).encode(), viewed,
                                          lambda url: url.replace("https://files.example.org", "/v")))
    assert shown["info"]["version"] == "1.0"
    assert shown["releases"] == {"1.0": [{**entry, "url": "/v/packages/ab/cd/ef/" + kept.filename,
                                          "yanked": True, "yanked_reason": "broken"}]}
    assert shown["urls"] == shown["releases"]["1.0"]


def source_page(p: ProjectPage) -> CachedPage:
    body = render_project_json(p, url_for=lambda url: url)
    return CachedPage(path=p.name, body=body, etag='"x"', mtime=0.0, last_modified="", last_serial=p.last_serial,
                      key=(1, 1, len(body)))


def test_view_pages_are_bounded_and_rebuilt_when_their_source_changes():
    async def scenario() -> None:
        views = ViewPages("/pypi", "https://files.example.org/packages", max_bytes=3000, clock=T0.timestamp)
        policy = AgePolicy(label="+cooldown/7d", min_age=timedelta(days=7))
        sources = {name: source_page(page(dist("1.0", "2026-05-01T00:00:00Z"), name=name)) for name in "abcdefgh"}
        for name, source in sources.items():
            entry = await views.project(policy, NormalizedName(name), source)
            await views.render(policy, entry, "index.html")
            assert views.fresh(policy, NormalizedName(name), source) is entry
            assert views.held_bytes <= 3000
        assert views.fresh(policy, NormalizedName("a"), sources["a"]) is None  # evicted, least recently used
        assert views.fresh(policy, NormalizedName("h"), sources["h"]) is not None
        replaced = source_page(page(dist("1.0", "2026-05-01T00:00:00Z"), name="h"))
        assert views.fresh(policy, NormalizedName("h"), replaced) is None

    asyncio.run(scenario())


@pytest.fixture
def history(tmp_path) -> Iterator[HistoryAccess]:
    db = Database.open(f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield HistoryAccess(db.engine, [tmp_path / "tier"], "/pypi")
    db.dispose()


@pytest.mark.parametrize(
    ("argument", "label"),
    [("2026-06-01", "+asof/2026-06-01T00:00:00Z"), ("2026-06-01T02:00:00+02:00", "+asof/2026-06-01T00:00:00Z"),
     ("2026-06-01T00:00:00.25Z", "+asof/2026-06-01T00:00:00.250000Z")],
)
def test_asof_views_name_their_moment_in_one_spelling(history, argument, label):
    view = AsOfViews(history, clock=lambda: T0.timestamp() + 86400)(argument)
    assert view.label == label
    assert view.blocking


@pytest.mark.parametrize(
    ("argument", "message"),
    [("2026-06-02T00:00:01Z", "2026-06-02T00:00:01Z is in the future: the index then is not known yet"),
     ("9999-12-31", "9999-12-31T00:00:00Z is in the future: the index then is not known yet"),
     ("06/01/2026", "+asof/06/01/2026: '06/01/2026' is not a moment"),
     ("2026-06-01T00:00:00", "+asof/2026-06-01T00:00:00: '2026-06-01T00:00:00' is not a moment")],
)
def test_asof_refuses_malformed_and_future_moments(history, argument, message):
    with pytest.raises(ViewError, match="^" + re.escape(message)):
        AsOfViews(history, clock=lambda: T0.timestamp() + 86400)(argument)


def test_asof_refuses_moments_without_a_history(history):
    view = AsOfViews(history, clock=lambda: T0.timestamp() + 86400)("2026-06-01")
    with pytest.raises(ViewError, match="^this mirror has not recorded an index history yet$"):
        view.apply(page(dist("1.0", "2026-05-01T00:00:00Z")), T0.timestamp())
