"""The popularity CSV: lenient about its header, strict about its values."""

from __future__ import annotations

from pathlib import Path

import pytest

from pypimirror.errors import TraceInputError
from pypimirror.popularity import read_popularity_csv



@pytest.mark.parametrize(
    "text",
    [
        "project,downloads\nDemo_Pkg,10\nother,3\n",
        "download_count,project\n10,Demo_Pkg\n3,other\n",
        "rank,package_name,num_downloads\n1,Demo_Pkg,10\n2,other,3\n",
        "Demo_Pkg,10\n\nother,3\n",
        "name;x,total count\r\nDemo_Pkg,10\r\nother,3\r\n",
    ],
    ids=["header", "reversed-columns", "named-columns", "no-header-blank-line", "crlf"],
)
def test_popularity_csv_headers_are_read_leniently(tmp_path: Path, text: str) -> None:
    path = tmp_path / "popular.csv"
    path.write_text(text)
    assert read_popularity_csv(path) == {"demo-pkg": 10, "other": 3}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("project,downloads\ndemo,12x\n", r"line 2: downloads '12x' is not a whole number"),
        ("project,downloads\ndemo,-3\n", r"line 2: downloads '-3'"),
        ("project,downloads\ndemo,1.5\n", r"line 2: downloads '1.5'"),
        ("project,downloads\ndemo\n", r"line 2: expected at least 2 columns"),
        ("project,downloads\n,4\n", r"line 2: the project name is empty"),
        ("project,downloads\nDemo,4\ndemo,5\n", r"line 3: project 'demo' is listed again \(first on line 2\)"),
        ("project,rank\ndemo,1\n", r"line 1: cannot tell the project and download columns"),
        ("first,second\ndemo,today\n", r"line 2: downloads 'today'"),  # unnamed columns: the first two
        ("demo,4\nother,many\n", r"line 2: downloads 'many'"),
    ],
)
def test_popularity_csv_values_are_checked_strictly_naming_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "popular.csv"
    path.write_text(text)
    with pytest.raises(TraceInputError, match=message):
        read_popularity_csv(path)


def test_an_unreadable_popularity_csv_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(TraceInputError, match="missing.csv: cannot read"):
        read_popularity_csv(tmp_path / "missing.csv")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(TraceInputError, match="binary.csv"):
        read_popularity_csv(binary)
