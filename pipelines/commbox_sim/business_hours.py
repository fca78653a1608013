"""Per-stream business calendars: opening hours in a local time zone, holidays, UTC intervals."""

from __future__ import annotations

import bisect
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from .clock import to_us

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_US = 86_400_000_000


class BusinessCalendar:
    """Opening hours of one stream, answered in UTC microseconds.

    Intervals are materialised per local date on demand, so a clock advanced far ahead still works.
    """

    def __init__(self, timezone: str, hours: dict[str, str | None], holidays: list[date], first_day: date):
        self.timezone = timezone
        self.tz = ZoneInfo(timezone)
        if not any(hours.get(d) for d in DAY_NAMES):
            raise ValueError("a stream needs at least one open day a week")
        self.hours = hours
        self.holidays = sorted(holidays)
        self._holiday_set = set(holidays)
        self._next_day = first_day
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._offset_by_day: dict[date, int] = {}

    def _extend_to(self, t_us: int) -> None:
        while not self._ends or self._ends[-1] < t_us + 8 * _DAY_US:
            day = self._next_day
            self._next_day = day + timedelta(days=1)
            spec = self.hours.get(DAY_NAMES[day.weekday()])
            if not spec or day in self._holiday_set:
                continue
            opens, closes = spec.split("-")
            h1, m1 = (int(x) for x in opens.split(":"))
            h2, m2 = (int(x) for x in closes.split(":"))
            self._starts.append(to_us(datetime.combine(day, time(h1, m1), self.tz)))
            self._ends.append(to_us(datetime.combine(day, time(h2, m2), self.tz)))

    def is_open(self, t_us: int) -> bool:
        self._extend_to(t_us)
        i = bisect.bisect_right(self._starts, t_us) - 1
        return i >= 0 and self._starts[i] <= t_us < self._ends[i]

    def next_open(self, t_us: int) -> int:
        """``t_us`` itself when open, else the next opening instant."""
        self._extend_to(t_us)
        i = bisect.bisect_right(self._starts, t_us) - 1
        if i >= 0 and t_us < self._ends[i]:
            return t_us
        return self._starts[i + 1]

    def closes_at(self, t_us: int) -> int:
        """Closing instant of the interval containing an open ``t_us``."""
        self._extend_to(t_us)
        i = bisect.bisect_right(self._starts, t_us) - 1
        return self._ends[i]

    def local_offset_us(self, day: date) -> int:
        off = self._offset_by_day.get(day)
        if off is None:
            delta = datetime.combine(day, time(12), self.tz).utcoffset() or timedelta(0)
            off = int(delta.total_seconds()) * 1_000_000
            self._offset_by_day[day] = off
        return off

    def reply_time(self, t_us: int, rng, mean_inside_s: float) -> int:
        """When an agent answers something that arrived at ``t_us``: fast inside hours, next morning outside."""
        if self.is_open(t_us):
            answer = t_us + int(rng.expovariate(1.0 / mean_inside_s) * 1_000_000) + 20_000_000
            if answer < self.closes_at(t_us):
                return answer
            t_us = self.closes_at(t_us)
        opening = self.next_open(t_us)
        return opening + int(rng.expovariate(1.0 / (mean_inside_s * 1.5)) * 1_000_000) + 60_000_000
