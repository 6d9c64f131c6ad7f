"""Cron expressions with crontab's meaning, as APScheduler 3 triggers.

APScheduler 3 reads a day-of-week field counting from Monday and requires both day of month
and day of week to match; crontab counts from Sunday (0 and 7), and fires on a day matching
either when both are restricted. Operators write crontab, so the configuration is validated,
and the scheduler runs, through :func:`make_trigger` alone: what loads is what runs.
"""

from __future__ import annotations

__all__ = ["crontab_day_of_week", "make_trigger"]

import re
from datetime import timedelta

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

_CRONTAB_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_APSCHEDULER_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_ITEM = re.compile(r"(?P<range>\*|(?P<first>\w+)(?:-(?P<last>\w+))?)(?:/(?P<step>\d+))?")


def make_trigger(
    *, interval: timedelta | None = None, cron: str | None = None, jitter: timedelta = timedelta(0)
) -> BaseTrigger:
    """The APScheduler trigger for ``schedule``, each run delayed by up to ``jitter`` at random.

    Cron expressions keep crontab's meaning: weekdays count from Sunday (APScheduler 3 counts
    from Monday), times are local, and when both day of month and day of week are restricted a
    day matching either one fires (APScheduler alone would need both).
    """
    jitter_s = int(jitter.total_seconds()) or None
    if interval is not None:
        return IntervalTrigger(seconds=interval.total_seconds(), jitter=jitter_s)
    if cron is None:
        raise ValueError("a schedule needs an interval or a cron expression")
    fields = cron.split()
    if len(fields) != 5:
        raise ValueError(f"{cron!r} is not a 5-field cron expression")
    minute, hour, day, month, day_of_week = fields
    weekdays = crontab_day_of_week(day_of_week)
    if day == "*" or weekdays == "*":
        return CronTrigger(
            minute=minute, hour=hour, day=day, month=month, day_of_week=weekdays, jitter=jitter_s
        )
    by_day = CronTrigger(minute=minute, hour=hour, day=day, month=month)
    by_weekday = CronTrigger(minute=minute, hour=hour, month=month, day_of_week=weekdays)
    return OrTrigger([by_day, by_weekday], jitter=jitter_s)


def crontab_day_of_week(field: str) -> str:
    """A crontab day-of-week field (``0``/``7`` = Sunday, names, ranges, steps) for APScheduler 3.

    Returns ``*`` for every day, else the days as a list of names APScheduler reads the same
    way (``1-5`` → ``mon,tue,wed,thu,fri``). Raises ValueError for what crontab would refuse.
    """
    days: set[int] = set()
    for item in field.lower().split(","):
        days.update(_crontab_days(item, field))
    if len(days) == len(_CRONTAB_DAYS):
        return "*"
    return ",".join(name for name in _APSCHEDULER_DAYS if _CRONTAB_DAYS.index(name) in days)


def _crontab_days(item: str, field: str) -> set[int]:
    match = _DAY_ITEM.fullmatch(item)
    if match is None:
        raise ValueError(f"{field!r} is not a day-of-week field")
    step = int(match["step"] or 1)
    if step < 1:
        raise ValueError(f"{field!r}: a step must be at least 1")
    if match["range"] == "*":
        first, last = 0, 6
    else:
        first = _crontab_day(match["first"], field)
        last = _crontab_day(match["last"], field) if match["last"] else (6 if match["step"] else first)
        if last < first:
            raise ValueError(f"{field!r}: the range {item!r} runs backwards")
    return {day % 7 for day in range(first, last + 1, step)}


def _crontab_day(token: str, field: str) -> int:
    if token.isdecimal():
        number = int(token)
        if number > 7:
            raise ValueError(f"{field!r}: {token} is not a weekday (0-7)")
        return number
    if token in _CRONTAB_DAYS:
        return _CRONTAB_DAYS.index(token)
    raise ValueError(f"{field!r}: {token!r} is not a weekday")
