"""A token bucket per principal, for refused attempts: guessing and probing cost time.

Memory is bounded: the buckets live in the one bounded cache (`policies.cache`), at most
`max_keys` of them, the least recently used dropped first (a dropped bucket was the least
active one, and the directory bounds who can have one anyway).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from policies.cache import BoundedCache


class RefusalBudget:
    """`burst` refusals at once per key, refilled at `per_minute`; `spend` one per refusal."""

    def __init__(
        self,
        burst: int,
        per_minute: float,
        *,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1 or per_minute <= 0:
            raise ValueError("a refusal budget needs burst >= 1 and per_minute > 0")
        self.burst = float(burst)
        self.rate = per_minute / 60.0
        self.max_keys = max_keys
        self._clock = clock
        # A bucket left alone this long is full again, the same as no bucket: let it expire.
        self._buckets: BoundedCache[str, tuple[float, float]] = BoundedCache(
            max_keys, ttl=self.burst / self.rate, clock=clock
        )

    def _level(self, key: str) -> float:
        """Tokens the key has now (a full bucket for an unknown key)."""
        found = self._buckets.get(key)
        if found is None:
            return self.burst
        tokens, at = found
        return min(self.burst, tokens + (self._clock() - at) * self.rate)

    def retry_after(self, key: str) -> int:
        """Seconds until the key may try again; 0 when it has a token now."""
        tokens = self._level(key)
        if tokens >= 1.0:
            return 0
        return max(1, math.ceil((1.0 - tokens) / self.rate))

    def spend(self, key: str) -> None:
        """Take one token for a refused attempt (never below empty)."""
        tokens = max(0.0, self._level(key) - 1.0)
        self._buckets.put(key, (tokens, self._clock()))

    def __len__(self) -> int:
        return len(self._buckets)
