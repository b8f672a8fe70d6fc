"""MemoryStorage's feed packs what history has not written past its newest entries, losslessly."""

from __future__ import annotations

import pytest

from avtomatika.storage.memory_feed import MemoryFeed


def _entry(n: int) -> bytes:
    return b'[["step_finished","job-%d",%d.5,"bp","s","running","{}",{}]]' % (n, n)


def _filled(count: int) -> MemoryFeed:
    feed = MemoryFeed(pack_at=4, block=3)
    for n in range(1, count + 1):
        feed.append(_entry(n))
    return feed


def test_entries_past_the_newest_are_packed_and_read_back_as_they_came() -> None:
    feed = _filled(20)
    assert (len(feed._blocks), len(feed._recent)) == (5, 5)  # 15 packed, the newest 5 as they came
    assert len(feed) == 20
    assert feed.read(1, 100) == [(n, _entry(n)) for n in range(1, 21)]


@pytest.mark.parametrize("start", [1, 2, 4, 15, 16, 19, 20])
@pytest.mark.parametrize("limit", [1, 2, 5, 30])
def test_a_read_starts_and_stops_anywhere_in_a_block(start: int, limit: int) -> None:
    expected = [(n, _entry(n)) for n in range(start, min(20, start + limit - 1) + 1)]
    assert _filled(20).read(start, limit) == expected


def test_reading_past_the_end_finds_nothing() -> None:
    assert _filled(20).read(21, 10) == []
    assert MemoryFeed().read(1, 10) == []


@pytest.mark.parametrize("through", [0, 1, 2, 3, 4, 7, 15, 16, 19, 20, 25])
def test_dropping_through_a_position_keeps_the_entries_after_it(through: int) -> None:
    feed = _filled(20)
    feed.drop_through(through)
    kept = list(range(min(through, 20) + 1, 21))
    assert len(feed) == len(kept)
    assert feed.first == min(through, 20) + 1
    assert feed.read(1, 100) == [(n, _entry(n)) for n in kept]


def test_entries_dropped_one_by_one_and_appended_keep_their_order() -> None:
    feed = _filled(20)
    for n in range(21, 41):
        feed.drop_through(feed.first)  # a full feed: the oldest goes as each new one comes
        feed.append(_entry(n))
        assert len(feed) == 20
    assert feed.read(feed.first, 100) == [(n, _entry(n)) for n in range(21, 41)]


def test_a_lagging_feed_keeps_much_less_than_its_entries() -> None:
    feed = MemoryFeed()
    entries = [_entry(n) for n in range(10_000)]
    for entry in entries:
        feed.append(entry)
    packed = sum(len(block.packed) + block.sizes.itemsize * len(block.sizes) for block in feed._blocks)
    assert packed < sum(map(len, entries[: feed._packed])) / 4
    assert [entry for _, entry in feed.read(1, 10_000)] == entries
