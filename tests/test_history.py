"""The history's pure parts: the page comparison, the encodings, and the page as it was."""

from __future__ import annotations

import logging

import pytest
from packaging.utils import NormalizedName

from pypimirror.history import FileHistory, ProjectAsOf, page_as_of
from pypimirror.historychanges import (
    StateChange,
    decode_entry,
    diff_stored_page,
    encode_entry,
    file_key,
    upload_epoch,
    yank_state,
    yanked_value,
)
from pypimirror.pagemodel import DistFile, ProjectPage
from pypimirror.pages import render_project_json

PREFIX = "/pypi"


def dist(filename: str, *, upload: str | None = "2025-01-01T00:00:00Z", yanked: bool | str = False) -> DistFile:
    return DistFile(
        filename=filename, url=f"{PREFIX}/packages/ab/cd/ef/{filename}", sha256="0" * 64, requires_python=None,
        size=10, upload_time=upload, yanked=yanked, core_metadata=False, provenance=None, version="1.0",
    )


def page(*files: DistFile, status: str | None = None, reason: str | None = None) -> ProjectPage:
    return ProjectPage(NormalizedName("demo"), "demo", 7, files, ("1.0",), status, reason)


def as_json(p: ProjectPage) -> bytes:
    return render_project_json(p, url_for=lambda url: url)


def test_an_entry_survives_encoding_whatever_its_text() -> None:
    odd = DistFile("x-1.0.tar.gz", "/pypi/packages/a/b/c/x-1.0.tar.gz", None, ">=3.8", 1, None,
                   "reason \ud800 \u00e9 \"quoted\"", "f" * 64, "https://example.org/prov", None)
    assert decode_entry(encode_entry(odd)) == odd


def test_file_keys_are_stable_signed_64_bit_and_differ() -> None:
    keys = {file_key(f"demo-1.0.{i}.tar.gz") for i in range(1000)}
    assert len(keys) == 1000 and all(-(2**63) <= key < 2**63 for key in keys)
    assert file_key("demo-1.0.tar.gz") == file_key("demo-1.0.tar.gz")


@pytest.mark.parametrize("yanked", [False, True, "a reason"])
def test_yank_states_round_trip(yanked: bool | str) -> None:
    assert yanked_value(yank_state(yanked)) == yanked


def test_upload_times_are_utc() -> None:
    assert upload_epoch("1970-01-02T00:00:00.5Z") == 86400.5


def test_equal_pages_record_nothing_and_an_unreadable_stored_page_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    new = page(dist("demo-1.0.tar.gz"))
    assert diff_stored_page(as_json(new), new, as_json(new), at=1.0) is None
    with caplog.at_level(logging.WARNING):
        assert diff_stored_page(b"{not json", new, as_json(new), at=1.0) is None
    assert "history of demo: the stored page is unreadable" in caplog.text


def test_the_comparison_finds_new_gone_and_yanked_files() -> None:
    old = page(dist("demo-1.0.tar.gz"), dist("demo-1.0-py3-none-any.whl"))
    new = page(dist("demo-1.0.tar.gz", yanked="bad"), dist("demo-1.0-1-py3-none-any.whl"))
    changes = diff_stored_page(as_json(old), new, as_json(new), at=5.0)
    assert changes is not None
    assert changes.new_files == ("demo-1.0-1-py3-none-any.whl",)
    assert [f.filename for f in changes.gone_files] == ["demo-1.0-py3-none-any.whl"]
    assert changes.changes == (StateChange("demo-1.0.tar.gz", (None, None), ("yanked", "bad")),)
    assert changes.created_at is None and not changes.removed


def test_a_quarantine_hides_files_and_its_end_returns_them() -> None:
    before = page(dist("demo-1.0.tar.gz"))
    quarantined = page(dist("demo-1.0.tar.gz"), status="quarantined", reason="malware")
    hiding = diff_stored_page(as_json(before), quarantined, as_json(quarantined), at=5.0)
    assert hiding is not None and hiding.gone_files == () and hiding.new_files == ()
    assert [f.filename for f in hiding.hidden_files] == ["demo-1.0.tar.gz"]
    assert hiding.changes == (StateChange(None, (None, None), ("quarantined", "malware")),)
    ending = diff_stored_page(as_json(quarantined), before, as_json(before), at=6.0)
    assert ending is not None and ending.returned == ("demo-1.0.tar.gz",) and ending.hidden_files == ()


def test_a_new_project_dates_from_its_earliest_upload() -> None:
    new = page(dist("demo-1.0.tar.gz", upload="1970-01-01T00:01:40Z"), status="archived")
    changes = diff_stored_page(None, new, as_json(new), at=500.0)
    assert changes is not None and changes.created_at == 100.0
    assert changes.new_files == ("demo-1.0.tar.gz",)
    assert changes.changes == (StateChange(None, (None, None), ("archived", None)),)


def test_the_page_as_it_was_applies_upload_times_removals_and_yanks() -> None:
    early, late = "1970-01-01T00:01:40Z", "1970-01-01T00:16:40Z"  # 100 s and 1000 s
    current = page(dist("demo-1.0.tar.gz", upload=early, yanked="bad"), dist("demo-2.0.tar.gz", upload=late))
    removed = dist("demo-0.9.tar.gz", upload=early)
    no_time = dist("demo-0.1.tar.gz", upload=None)
    as_of = ProjectAsOf(
        name=NormalizedName("demo"), moment=500.0, display_name=None, status=None,
        yanked={"demo-1.0.tar.gz": False},
        files={
            file_key(removed.filename): FileHistory(None, 600.0, removed),
            file_key(no_time.filename): FileHistory(450.0, 550.0, no_time),
        },
    )
    shown = page_as_of(current, as_of, prefix=PREFIX, held_locally=lambda path: path.endswith("0.9.tar.gz"))
    assert [(f.filename, f.yanked) for f in shown.files] == [("demo-0.9.tar.gz", False), ("demo-1.0.tar.gz", False)]
    none_held = page_as_of(current, as_of, prefix=PREFIX, held_locally=lambda _path: False)
    assert [f.filename for f in none_held.files] == ["demo-1.0.tar.gz"]
    assert shown.status is None and shown.last_serial == 7
