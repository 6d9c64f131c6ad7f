"""The one HTTP-date reader: the three formats RFC 9110 names, and everything else as None."""

from __future__ import annotations

import calendar

import pytest

from pypimirror.httpdate import parse_http_date

NOV_6_1994 = calendar.timegm((1994, 11, 6, 8, 49, 37))
NOW_2026 = calendar.timegm((2026, 12, 5, 0, 0, 0))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # the three formats a recipient must read
        ("Sun, 06 Nov 1994 08:49:37 GMT", NOV_6_1994),
        ("Sunday, 06-Nov-94 08:49:37 GMT", NOV_6_1994),
        ("Sun Nov  6 08:49:37 1994", NOV_6_1994),
        ("Sun Nov 06 08:49:37 1994", NOV_6_1994),
        ("  Sun, 06 Nov 1994 08:49:37 GMT\t", NOV_6_1994),  # optional whitespace around a field value
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0),
        ("Fri, 31 Dec 9999 23:59:59 GMT", calendar.timegm((9999, 12, 31, 23, 59, 59))),
        ("Mon, 01 Jan 0001 00:00:00 GMT", calendar.timegm((1, 1, 1, 0, 0, 0))),
        ("Wed, 31 Dec 2008 23:59:60 GMT", calendar.timegm((2008, 12, 31, 23, 59, 59))),  # leap second
        ("Mon, 06 Nov 1994 08:49:37 GMT", NOV_6_1994),  # a wrong weekday is not checked
        # RFC 850's two-digit year: never more than 50 years ahead (now is December 2026)
        ("Monday, 01-Jan-76 00:00:00 GMT", calendar.timegm((2076, 1, 1, 0, 0, 0))),
        ("Friday, 01-Jan-77 00:00:00 GMT", calendar.timegm((1977, 1, 1, 0, 0, 0))),
        ("Saturday, 01-Jan-00 00:00:00 GMT", calendar.timegm((2000, 1, 1, 0, 0, 0))),
        # no zone, or another zone, where the format requires GMT: not an HTTP date
        ("Sun, 06 Nov 1994 08:49:37", None),
        ("Sunday, 06-Nov-94 08:49:37", None),
        ("Sun, 06 Nov 1994 08:49:37 UTC", None),
        ("Sun, 06 Nov 1994 08:49:37 +0000", None),
        ("Sun, 06 Nov 1994 10:49:37 +0200", None),
        ("Sun Nov  6 08:49:37 1994 GMT", None),
        ("Sun, 06 Nov 1994 08:49:37 gmt", None),
        # out of range or impossible
        ("Sat, 01 Jan 10000 00:00:00 GMT", None),
        ("Sat, 01 Jan 99999999999999999999 00:00:00 GMT", None),
        ("Sat Jan  1 00:00:00 10000", None),
        ("Sat, 01 Jan 0000 00:00:00 GMT", None),
        ("Tue, 31 Feb 2000 00:00:00 GMT", None),
        ("Tue, 01 Feb 2000 24:00:00 GMT", None),
        ("Tue, 01 Feb 2000 23:60:00 GMT", None),
        ("Tue, 01 Foo 2000 00:00:00 GMT", None),
        ("Tue, 00 Feb 2000 00:00:00 GMT", None),
        # garbage
        (None, None),
        ("", None),
        ("not a date", None),
        ("1700000000", None),
        ("Sun, 06 Nov 1994", None),
        ("Sun, ٠٦ Nov 1994 08:49:37 GMT", None),  # non-ASCII digits
        ("Sun, 06 Nov 1994 08:49:37 GMT, Sun, 06 Nov 1994 08:49:37 GMT", None),
        ("Sun, 06 Nov 1994 08:49:37 GMT" + "x" * 10_000, None),
        ("2024-01-02T03:04:05Z", None),
    ],
)
def test_parse_http_date_reads_the_three_formats_and_nothing_else(value: str | None, expected: int | None) -> None:
    assert parse_http_date(value, now=NOW_2026) == expected


def test_two_digit_year_is_placed_relative_to_now() -> None:
    rfc850 = "Thursday, 01-Jan-70 00:00:00 GMT"
    assert parse_http_date(rfc850, now=NOW_2026) == calendar.timegm((2070, 1, 1, 0, 0, 0))
    assert parse_http_date(rfc850, now=calendar.timegm((2019, 1, 1, 0, 0, 0))) == 0
