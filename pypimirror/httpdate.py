"""The one reader of HTTP dates (RFC 9110 §5.6.7), for validators from clients and dates from the upstream.

HTTP has three date formats and a recipient must read all of them: IMF-fixdate
(``Sun, 06 Nov 1994 08:49:37 GMT``), the obsolete RFC 850 form (``Sunday, 06-Nov-94 08:49:37
GMT``) and asctime (``Sun Nov  6 08:49:37 1994``). Every HTTP date is in GMT: the first two must
say so and asctime never names a zone, so a date that leaves out a zone it must carry, or names
another one, is not an HTTP date. Anything else, including a date that does not exist (31 Feb,
25:00) or does not fit in four year digits, reads as None, never as an exception: a client's
unreadable ``If-Modified-Since`` is ignored, as RFC 9110 says, rather than answered with a 500.
"""

from __future__ import annotations

__all__ = ["parse_http_date"]

import logging
import re
import time
from datetime import UTC, datetime
from typing import Final

logger = logging.getLogger(__name__)

# Spelled out: calendar.month_abbr follows the locale, and HTTP's month names never do.
_MONTHS: Final = {
    name: number
    for number, name in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)
}
_MONTH: Final = "(" + "|".join(_MONTHS) + ")"
_TIME: Final = "([0-9]{2}):([0-9]{2}):([0-9]{2})"
# [0-9] rather than \d: \d also matches non-ASCII digits. The weekday is not checked against
# the date (RFC 9110 lets a recipient ignore it), only its spelling.
_IMF_FIXDATE: Final = re.compile(rf"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{{2}}) {_MONTH} ([0-9]{{4}}) {_TIME} GMT")
_RFC850_DATE: Final = re.compile(
    rf"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), ([0-9]{{2}})-{_MONTH}-([0-9]{{2}}) {_TIME} GMT"
)
_ASCTIME_DATE: Final = re.compile(rf"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) {_MONTH} ([0-9 ][0-9]) {_TIME} ([0-9]{{4}})")
# RFC 9110: a two-digit year that would be more than 50 years in the future is in the past.
_TWO_DIGIT_YEAR_HORIZON: Final = 50


def parse_http_date(value: str | None, *, now: float | None = None) -> int | None:
    """Unix seconds of an HTTP date; None when absent, malformed or not a real date.

    ``now`` (Unix seconds, default the current time) only places the two-digit year of an
    RFC 850 date. A leap second (``:60``) reads as second 59 of its minute.
    """
    if not value:
        return None
    text = value.strip(" \t")
    if match := _IMF_FIXDATE.fullmatch(text):
        day, month, year, hour, minute, second = match.groups()
        return _unix_seconds(int(year), month, day, hour, minute, second)
    if match := _ASCTIME_DATE.fullmatch(text):
        month, day, hour, minute, second, year = match.groups()
        return _unix_seconds(int(year), month, day, hour, minute, second)
    if match := _RFC850_DATE.fullmatch(text):
        day, month, short_year, hour, minute, second = match.groups()
        return _unix_seconds(_full_year(int(short_year), now), month, day, hour, minute, second)
    return None


def _full_year(short_year: int, now: float | None) -> int:
    """The most recent year ending in ``short_year`` that is not more than 50 years ahead."""
    this_year = time.gmtime(time.time() if now is None else now).tm_year
    year = this_year - this_year % 100 + short_year
    if year > this_year + _TWO_DIGIT_YEAR_HORIZON:
        year -= 100
    return year


def _unix_seconds(year: int, month: str, day: str, hour: str, minute: str, second: str) -> int | None:
    try:
        when = datetime(year, _MONTHS[month], int(day), int(hour), int(minute), min(int(second), 59), tzinfo=UTC)
    except ValueError:  # 31 Feb, hour 25, year 0
        return None
    return int(when.timestamp())
