"""Per-key exponential back-off, as client-go's flowcontrol.Backoff the kubelet uses for
CrashLoopBackOff (10 s doubling to 5 min) and ImagePullBackOff.

`in_backoff_since(key, t)`: whether an event at `t` (a container's exit, a pull's failure) is
still inside the key's current window, i.e. less than the window has passed since `t`. `next(key)`
opens the next window: the initial one for a new key, or for a key whose last window opened more
than twice the maximum ago (a container that ran fine for 10 minutes starts again at 10 s),
else double the last, capped. Times are the clock's wall time in seconds; no jitter (tests
under a fake clock see exact windows).
"""

from __future__ import annotations

import dataclasses

from edgekube._cogs import clock as clock_mod


@dataclasses.dataclass
class _Entry:
    window: float
    opened: float


class Backoff:
    def __init__(self, *, clock: clock_mod.Clock, initial: float = 10.0, maximum: float = 300.0) -> None:
        self._clock = clock
        self.initial = initial
        self.maximum = maximum
        self._entries: dict[str, _Entry] = {}

    def _now(self) -> float:
        return self._clock.now().timestamp()

    def _expired(self, entry: _Entry, t: float) -> bool:
        return t - entry.opened > 2 * self.maximum

    def in_backoff_since(self, key: str, t: float) -> bool:
        entry = self._entries.get(key)
        if entry is None or self._expired(entry, t):
            return False
        return self._now() - t < entry.window

    def next(self, key: str, t: float) -> None:
        entry = self._entries.get(key)
        if entry is None or self._expired(entry, t):
            self._entries[key] = _Entry(self.initial, self._now())
            return
        entry.window = min(entry.window * 2, self.maximum)
        entry.opened = self._now()

    def window(self, key: str) -> float:
        entry = self._entries.get(key)
        return entry.window if entry is not None else 0.0

    def remaining(self, key: str, t: float) -> float:
        """Seconds until an event at `t` leaves the key's window (0 when it is not in one)."""
        entry = self._entries.get(key)
        if entry is None:
            return 0.0
        return max(0.0, t + entry.window - self._now())

    def forget(self, prefix: str) -> None:
        for key in [k for k in self._entries if k.startswith(prefix)]:
            del self._entries[key]

    def gc(self) -> None:
        """Drop entries whose windows closed long ago."""
        now = self._now()
        for key in [k for k, e in self._entries.items() if now - e.opened > 2 * self.maximum]:
            del self._entries[key]
