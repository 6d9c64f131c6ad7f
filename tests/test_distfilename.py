"""Which file names name a distribution, and what they say."""

from __future__ import annotations

import pytest
from packaging.tags import Tag
from packaging.version import Version

from pypimirror.distfilename import DistFilename, parse_dist_filename


def test_a_wheel_names_its_project_version_and_tags() -> None:
    parsed = parse_dist_filename("Foo_Bar-2.0.post1-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl")
    assert parsed == DistFilename(
        "foo-bar",
        Version("2.0.post1"),
        frozenset({Tag("cp312", "cp312", "manylinux_2_17_x86_64"), Tag("cp312", "cp312", "manylinux2014_x86_64")}),
    )


@pytest.mark.parametrize("filename", ["foo_bar-1.0.tar.gz", "foo_bar-1.0.zip"])
def test_an_sdist_names_its_project_and_version_and_no_tags(filename: str) -> None:
    assert parse_dist_filename(filename) == DistFilename("foo-bar", Version("1.0"), None)


@pytest.mark.parametrize(
    "filename",
    [
        "foo-1.0-py2.7.egg",  # legacy formats: no standard reading
        "foo-1.0.tar.bz2",
        "foo-1.0.exe",
        "foo-notaversion-py3-none-any.whl",
        "foo-1.0-py3-none.whl",  # a wheel name with a part missing
        "foo-notaversion.tar.gz",
        "metadata.json",
    ],
)
def test_other_names_name_nothing(filename: str) -> None:
    assert parse_dist_filename(filename) is None
