"""China's working-day calendar for SLAs (issue 15 item 12).

Expected dates are from the State Council's published notices, not from the code under test:
2025 National Day + Mid-Autumn: 10月1日至8日放假调休, 9月28日(星期日)、10月11日(星期六)上班;
2026 Spring Festival: 2月15日至23日放假调休, 2月14日(星期六)、2月28日(星期六)上班.
Times: 10:00 in Asia/Shanghai is 02:00 UTC.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime

from geo import incidents as inc


def cal(**kw) -> inc.WorkCalendar:
    return inc.WorkCalendar(inc.IncidentSettings(**kw))


def test_make_up_working_weekends_count() -> None:
    c = cal()
    fri = datetime(2026, 2, 13, 2, 0, tzinfo=UTC)  # Friday 10:00
    assert c.add(fri, 1) == datetime(2026, 2, 14, 2, 0, tzinfo=UTC)  # Saturday is worked
    # two working days: Sat 14 worked, 15-23 off, Tue 24 10:00
    assert c.add(fri, 2) == datetime(2026, 2, 24, 2, 0, tzinfo=UTC)
    assert c.is_workday(date(2025, 9, 28)) and c.is_workday(date(2025, 10, 11))
    assert not any(c.is_workday(date(2025, 10, d)) for d in range(1, 9))


def test_overrides_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("WANGGE_WORKDAYS", '["2026-02-21"]')
    monkeypatch.setenv("WANGGE_HOLIDAYS", '["2026-02-24"]')
    c = inc.WorkCalendar(inc.IncidentSettings())
    assert c.is_workday(date(2026, 2, 21))  # inside the official holiday, made a working day
    assert not c.is_workday(date(2026, 2, 24))  # an official working day, made a holiday
    off = cal(official_calendar=False)
    assert not off.is_workday(date(2026, 2, 14)) and off.is_workday(date(2026, 2, 16))


def test_uncovered_year_warns_and_counts_weekends(caplog) -> None:
    c = cal()
    with caplog.at_level(logging.WARNING, logger="geo.incidents.calendar"):
        fri = datetime(2030, 1, 4, 2, 0, tzinfo=UTC)  # Friday 10:00, a year not published
        assert c.add(fri, 1) == datetime(2030, 1, 7, 2, 0, tzinfo=UTC)  # Monday
    assert any("2030" in r.getMessage() for r in caplog.records)
