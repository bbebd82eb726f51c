"""The one bounded cache: least recently used entries go first, each entry may expire.

Everything the server remembers about strangers or asks of an identity provider (seen
signatures, Slack users, refusal budgets, what a message last showed, group membership) lives
in one of these, so no input can grow memory without bound. It sits in the lowest server layer
so that policies, channels and processes all share it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

_FOREVER = float("inf")


class BoundedCache(Generic[K, V]):
    """A mapping of at most `maxsize` entries; `ttl` (seconds) makes entries expire."""

    def __init__(
        self,
        maxsize: int,
        *,
        ttl: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if maxsize < 1:
            raise ValueError("a bounded cache needs maxsize >= 1")
        self.maxsize = maxsize
        self.ttl = ttl
        self._clock = clock
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The live value for `key`, or None; a hit makes it the most recently used."""
        found, value = self.lookup(key)
        return value if found else None

    def lookup(self, key: K) -> tuple[bool, V | None]:
        """(found, value): tells a stored None apart from a miss."""
        item = self._items.get(key)
        if item is None:
            return False, None
        if item[0] <= self._clock():
            del self._items[key]
            return False, None
        self._items.move_to_end(key)
        return True, item[1]

    def put(self, key: K, value: V, ttl: float | None = None) -> None:
        """Store `value`; `ttl` overrides the cache's own time to live for this entry."""
        life = ttl if ttl is not None else self.ttl
        self._items[key] = (_FOREVER if life is None else self._clock() + life, value)
        self._items.move_to_end(key)
        while len(self._items) > self.maxsize:
            self._items.popitem(last=False)

    def add(self, key: K, value: V) -> bool:
        """Store `value` unless `key` is live already; False when it was (a replay)."""
        if self.lookup(key)[0]:
            return False
        self.put(key, value)
        return True

    def pop(self, key: K) -> V | None:
        """Remove `key`, returning its live value if any."""
        item = self._items.pop(key, None)
        return item[1] if item is not None and item[0] > self._clock() else None

    def clear(self) -> None:
        """Forget every entry."""
        self._items.clear()

    def __contains__(self, key: object) -> bool:
        return self.lookup(key)[0]  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._items))
