"""The working-day calendar of SLAs: weekends and configured holidays are off, in
the local time zone ``IncidentSettings.timezone``."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from geo.core.errors import (
    InvalidInput,
)
from geo.incidents.settings import IncidentSettings


class WorkCalendar:
    """Working days: not weekends (if configured), not holidays. Counts whole 24 h days."""

    def __init__(self, settings: IncidentSettings) -> None:
        self.tz = ZoneInfo(settings.timezone)
        self.holidays = frozenset(settings.holidays)
        self.weekends = settings.workdays_off_weekend

    def is_workday(self, d: date) -> bool:
        return d not in self.holidays and not (self.weekends and d.weekday() >= 5)

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
