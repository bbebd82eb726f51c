"""The one bounded cache: least recently used entries go first, entries expire, None is a value."""

from __future__ import annotations

import pytest

from policies.cache import BoundedCache


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time on by `seconds`."""
        self.now += seconds


def test_least_recently_used_goes_first() -> None:
    cache: BoundedCache[str, int] = BoundedCache(3)
    for i, key in enumerate("abc"):
        cache.put(key, i)
    assert cache.get("a") == 0  # a hit makes "a" the most recently used…
    cache.put("d", 3)  # …so "b", the least recently used, goes
    assert list(cache) == ["c", "a", "d"]
    assert "b" not in cache
    assert len(cache) == 3
    cache.put("c", 9)  # overwriting refreshes too
    cache.put("e", 4)
    assert list(cache) == ["d", "c", "e"]
    assert cache.get("c") == 9


def test_entries_expire_after_the_cache_ttl_or_their_own() -> None:
    clock = FakeClock()
    cache: BoundedCache[str, str] = BoundedCache(10, ttl=60, clock=clock)
    cache.put("short", "s", ttl=5)
    cache.put("default", "d")
    clock.advance(4.9)
    assert cache.get("short") == "s"
    clock.advance(0.1)  # exactly at its deadline: gone
    assert cache.get("short") is None
    assert "short" not in cache
    assert cache.get("default") == "d"
    clock.advance(55)
    assert cache.lookup("default") == (False, None)
    assert len(cache) == 0  # expired entries found on lookup are dropped

    forever: BoundedCache[str, str] = BoundedCache(10, clock=clock)
    forever.put("k", "v")
    clock.advance(10**9)
    assert forever.get("k") == "v"


def test_add_refuses_a_live_key_and_takes_an_expired_one() -> None:
    clock = FakeClock()
    seen: BoundedCache[str, None] = BoundedCache(10, ttl=600, clock=clock)
    assert seen.add("sig", None) is True
    clock.advance(599)
    assert seen.add("sig", None) is False  # a replay within the window
    clock.advance(1)
    assert seen.add("sig", None) is True  # expired, so new again
    # A replay does not extend the window: it still ends 600 s after the first add.
    clock.advance(300)
    assert seen.add("sig", None) is False
    clock.advance(300)
    assert seen.add("sig", None) is True


def test_add_forgets_the_oldest_when_full() -> None:
    seen: BoundedCache[int, None] = BoundedCache(2)
    assert all(seen.add(i, None) for i in range(3))
    assert seen.add(0, None) is True  # pushed out, so not recognised any more
    assert seen.add(2, None) is False


def test_a_stored_none_is_told_apart_from_a_miss() -> None:
    cache: BoundedCache[str, str | None] = BoundedCache(10)
    cache.put("unknown-user", None)
    assert cache.lookup("unknown-user") == (True, None)
    assert cache.lookup("never-seen") == (False, None)
    assert "unknown-user" in cache
    assert "never-seen" not in cache
    assert cache.get("unknown-user") is None  # get() alone cannot tell them apart


def test_pop_returns_a_live_value_only() -> None:
    clock = FakeClock()
    cache: BoundedCache[str, int] = BoundedCache(10, ttl=10, clock=clock)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.pop("a") == 1
    assert cache.pop("a") is None
    clock.advance(10)
    assert cache.pop("b") is None  # expired: removed, but nothing returned
    assert len(cache) == 0


def test_maxsize_must_be_positive() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        BoundedCache(0)
