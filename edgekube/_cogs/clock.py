"""Time, passed in as a dependency so that tests can move it by hand.

Two clocks, two uses: `monotonic()` for every duration and deadline (a grace period, a backoff,
a sleep), since nothing sets it; `now()` only for timestamps that go on the wire or to disk
(conditions, events, schedule times), since a board's wall clock may be set by NTP, a person or
an RTC at any moment, backward or forward by years (edgekube._cogs.timefloor for stamps that
must not predate the build).
"""

from __future__ import annotations

import datetime
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime.datetime: ...

    def monotonic(self) -> float: ...


class WallClock:
    def now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime.datetime | None = None) -> None:
        self._now = start or datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
        self._mono = 1000.0

    def now(self) -> datetime.datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += datetime.timedelta(seconds=seconds)
        self._mono += seconds

    def jump(self, seconds: float) -> None:
        """The wall clock is set (NTP, a person), by `seconds` either way: no time passes."""
        self._now += datetime.timedelta(seconds=seconds)


def rfc3339(t: datetime.datetime) -> str:
    """Kubernetes' metav1.Time wire form: seconds precision, UTC, trailing Z."""
    return t.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
