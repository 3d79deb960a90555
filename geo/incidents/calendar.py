"""The working-day calendar of SLAs, in the local time zone ``IncidentSettings.timezone``.

A date is a working day by, in order: ``WANGGE_HOLIDAYS`` (off), ``WANGGE_WORKDAYS`` (on), the
State Council's published schedule with its make-up working weekends (调休) from the
``chinese-calendar`` package (``official_calendar``), else the weekend rule. A year the package
does not cover yet falls back to the weekend rule and logs a warning once per year.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import chinese_calendar

from geo.core.errors import (
    InvalidInput,
)
from geo.incidents.settings import IncidentSettings

log = logging.getLogger(__name__)
_WARNED: set[int] = set()


def official_workday(d: date) -> bool | None:
    """The State Council's schedule for ``d`` (True: working day), None for a year the
    installed ``chinese-calendar`` does not cover (warned once per year)."""
    try:
        return bool(chinese_calendar.is_workday(d))
    except NotImplementedError:
        if d.year not in _WARNED:
            _WARNED.add(d.year)
            log.warning("the working-day calendar has no official schedule for %d (update the "
                        "chinese-calendar package, or set WANGGE_HOLIDAYS / WANGGE_WORKDAYS): "
                        "SLA deadlines in %d count weekends only", d.year, d.year)
        return None


class WorkCalendar:
    """Working days (see the module docstring). Counts whole 24 h days."""

    def __init__(self, settings: IncidentSettings) -> None:
        self.tz = ZoneInfo(settings.timezone)
        self.holidays = frozenset(settings.holidays)
        self.workdays = frozenset(settings.workdays)
        self.official = settings.official_calendar
        self.weekends = settings.workdays_off_weekend

    def is_workday(self, d: date) -> bool:
        if d in self.holidays:
            return False
        if d in self.workdays:
            return True
        if self.official:
            known = official_workday(d)
            if known is not None:
                return known
        return not (self.weekends and d.weekday() >= 5)

    def add(self, start: datetime, workdays: float) -> datetime:
        """The instant ``workdays`` working days after ``start`` (aware datetime, UTC out)."""
        t = start.astimezone(self.tz)
        remaining = timedelta(days=float(workdays))
        for _ in range(3660):
            midnight = datetime.combine(t.date() + timedelta(days=1), datetime.min.time(),
                                        tzinfo=self.tz)
            if self.is_workday(t.date()):
                avail = midnight - t
                if remaining <= avail:
                    return (t + remaining).astimezone(UTC)
                remaining -= avail
            t = midnight
        raise InvalidInput("working-day calendar: no working day within ten years")
