"""Per-key exponential back-off, as client-go's flowcontrol.Backoff the kubelet uses for
CrashLoopBackOff (10 s doubling to 5 min) and ImagePullBackOff.

`in_backoff_since(key, t)`: whether an event at `t` (a container's exit, a pull's failure) is
still inside the key's current window, i.e. less than the window has passed since `t`. `next(key)`
opens the next window: the initial one for a new key, or for a key whose last window opened more
than twice the maximum ago (a container that ran fine for 10 minutes starts again at 10 s),
else double the last, capped. No jitter (tests under a fake clock see exact windows).

**Windows run on the monotonic clock.** Callers name events by the wall time they carry (a
container's `finishedAt` comes from runc's state, written before edgekube last started), but a
board's wall clock is set at any moment, by NTP or a person, often by years at its first sync:
measured in wall time, a jump back would hold a crash-looping container for as long as the jump,
and a jump forward would cut every window short. So each key maps the wall time of its latest
event to a monotonic instant once, when it is first seen (the time since the event, as the wall
clock says it then, bounded to [0, twice the maximum window]: an event "in the future" counts
as just now), and every window is measured from that instant on the monotonic clock.
"""

from __future__ import annotations

import dataclasses

from edgekube._cogs import clock as clock_mod


@dataclasses.dataclass
class _Entry:
    window: float
    opened: float  # monotonic


@dataclasses.dataclass(frozen=True)
class _Seen:
    wall: float
    mono: float


class Backoff:
    def __init__(self, *, clock: clock_mod.Clock, initial: float = 10.0, maximum: float = 300.0) -> None:
        self._clock = clock
        self.initial = initial
        self.maximum = maximum
        self._entries: dict[str, _Entry] = {}
        self._seen: dict[str, _Seen] = {}  # key -> its latest event, wall and monotonic

    def _now(self) -> float:
        return self._clock.monotonic()

    def _instant(self, key: str, t: float) -> float:
        """The monotonic instant of the event at wall time `t` (module doc)."""
        seen = self._seen.get(key)
        if seen is None or seen.wall != t:
            ago = min(max(self._clock.now().timestamp() - t, 0.0), 2 * self.maximum)
            seen = self._seen[key] = _Seen(wall=t, mono=self._now() - ago)
        return seen.mono

    def _expired(self, entry: _Entry, at: float) -> bool:
        return at - entry.opened > 2 * self.maximum

    def in_backoff_since(self, key: str, t: float) -> bool:
        entry = self._entries.get(key)
        if entry is None:
            return False
        at = self._instant(key, t)
        if self._expired(entry, at):
            return False
        return self._now() - at < entry.window

    def next(self, key: str, t: float) -> None:
        entry = self._entries.get(key)
        at = self._instant(key, t)
        if entry is None or self._expired(entry, at):
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
        return max(0.0, self._instant(key, t) + entry.window - self._now())

    def forget(self, prefix: str) -> None:
        for key in [k for k in self._entries if k.startswith(prefix)]:
            del self._entries[key]
            self._seen.pop(key, None)

    def gc(self) -> None:
        """Drop entries whose windows closed long ago."""
        now = self._now()
        for key in [k for k, e in self._entries.items() if now - e.opened > 2 * self.maximum]:
            del self._entries[key]
            self._seen.pop(key, None)
