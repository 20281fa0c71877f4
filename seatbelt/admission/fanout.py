"""Per-key limits on fan-out itself: requests in flight (`max_concurrent`) and per minute (`rpm`).

Counted per proxy process, in memory, deliberately: both limits guard against one agent
flooding the upstream from one place, need an answer in microseconds, and must not turn a
ledger outage into a second failure. With N proxies sharing a ledger a key may reach N times
its limits; token caps stay exact fleet-wide because they live in the ledger.

`acquire` is synchronous (no await between the check and the count), so concurrent requests
cannot all slip past the same free slot. The state survives policy reloads: it is keyed by
key id and lives in the runtime.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

RPM_WINDOW = 60.0


@dataclass(frozen=True)
class FanoutRefusal:
    what: str  # "max_concurrent of 4" / "rpm of 60"
    retry_after: int


@dataclass
class FanoutLimiter:
    in_flight: dict[str, int] = field(default_factory=dict)
    recent: dict[str, deque[float]] = field(default_factory=dict)
    pending: dict[str, tuple[str, float]] = field(default_factory=dict)  # flow id -> key, stamp

    def check(self, key: str, max_concurrent: int | None, rpm: int | None,
              now: float | None = None) -> FanoutRefusal | None:
        """Would one more request of `key` break a limit? Counts nothing."""
        if max_concurrent is not None and self.in_flight.get(key, 0) >= max_concurrent:
            return FanoutRefusal(f"max_concurrent of {max_concurrent} requests in flight", 1)
        if rpm is not None:
            now = time.monotonic() if now is None else now
            stamps = self._prune(key, now)
            if len(stamps) >= rpm:
                # Room again when the stamp that keeps the count at rpm leaves the minute.
                oldest = stamps[len(stamps) - rpm]
                return FanoutRefusal(f"rpm of {rpm} requests per minute",
                                     max(1, math.ceil(oldest + RPM_WINDOW - now - 1e-6)))
        return None

    def acquire(self, key: str, token: str, now: float | None = None) -> None:
        """Count one request of `key` (in flight, and in this minute), pending under `token`
        (the flow id) until commit() or cancel()."""
        now = time.monotonic() if now is None else now
        self.in_flight[key] = self.in_flight.get(key, 0) + 1
        self.recent.setdefault(key, deque()).append(now)
        self.pending[token] = (key, now)

    def commit(self, token: str) -> str | None:
        """The request was admitted: it stays counted until release(key). Returns the key."""
        entry = self.pending.pop(token, None)
        return entry[0] if entry else None

    def cancel(self, token: str) -> None:
        """Undo a pending acquire (refused later, or an internal error): never sent upstream."""
        entry = self.pending.pop(token, None)
        if entry is None:
            return
        key, stamp = entry
        self.release(key)
        stamps = self.recent.get(key)
        if stamps is not None:
            try:
                stamps.remove(stamp)
            except ValueError:
                pass

    def release(self, key: str) -> None:
        """The request is over (settled, released or refused after acquire)."""
        left = self.in_flight.get(key, 0) - 1
        if left > 0:
            self.in_flight[key] = left
        else:
            self.in_flight.pop(key, None)

    def _prune(self, key: str, now: float) -> deque[float]:
        stamps = self.recent.get(key)
        if stamps is None:
            return deque()
        while stamps and stamps[0] <= now - RPM_WINDOW:
            stamps.popleft()
        if not stamps:
            del self.recent[key]
        return stamps
