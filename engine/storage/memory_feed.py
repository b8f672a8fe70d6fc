"""MemoryStorage's history feed: every commit's entry, in order, until history has written it.

While history keeps up the feed holds a few hundred entries as they came. When it falls behind (a
burst of commits saturating the event loop, history down), the entries past the newest
:data:`PACK_AT` are packed :data:`BLOCK` at a time into one zlib-compressed block: consecutive
entries repeat the same keys, kinds, blueprints and ids, so a W4 entry of ~420 bytes takes ~60 packed
(its share of the block's bookkeeping included), for ~1.3 µs of compression. What is read back is
exactly what came.
"""

from __future__ import annotations

import itertools
import zlib
from array import array
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

#: Entries kept as they came (the newest); the older ones are packed into blocks.
PACK_AT = 1024
#: Entries per packed block.
BLOCK = 64
#: zlib's fastest level: the higher ones made blocks of entries ~5 % smaller at 2-10x the time.
LEVEL = 1


@dataclass(slots=True, frozen=True)
class _Block:
    """Consecutive entries, compressed together; ``sizes``: each entry's length, in order."""

    packed: bytes
    sizes: array[int]

    @classmethod
    def of(cls, entries: list[bytes]) -> _Block:
        return cls(zlib.compress(b"".join(entries), LEVEL), array("I", map(len, entries)))

    def entries(self) -> list[bytes]:
        data = zlib.decompress(self.packed)
        ends = itertools.accumulate(self.sizes)
        return [data[end - size : end] for size, end in zip(self.sizes, ends, strict=True)]


class MemoryFeed:
    """Entries numbered from 1 in the order they were appended; the oldest are dropped first.

    ``first`` is the position of the oldest entry kept. Blocks hold the oldest entries and ``_recent``
    the newest; ``_skip`` entries at the start of the first block are gone already (written or
    dropped).
    """

    def __init__(self, pack_at: int = PACK_AT, block: int = BLOCK) -> None:
        self.pack_at, self.block = pack_at, block
        self.first = 1
        self._blocks: deque[_Block] = deque()
        self._recent: deque[bytes] = deque()
        self._skip = 0
        self._packed = 0  # entries in the blocks, the skipped ones included
        self._unpacked: tuple[_Block, list[bytes]] | None = None  # the block read last, decompressed

    def __len__(self) -> int:
        return self._packed - self._skip + len(self._recent)

    def append(self, entry: bytes) -> None:
        recent = self._recent
        recent.append(entry)
        if len(recent) >= self.pack_at + self.block:
            self._blocks.append(_Block.of([recent.popleft() for _ in range(self.block)]))
            self._packed += self.block

    def drop_through(self, position: int) -> None:
        """Forget every entry up to ``position`` (included)."""
        while self._blocks and position >= self.first:
            block = self._blocks[0]
            left = len(block.sizes) - self._skip
            gone = min(left, position - self.first + 1)
            self.first += gone
            if gone < left:
                self._skip += gone
                return
            self._blocks.popleft()
            self._packed -= len(block.sizes)
            self._skip = 0
            if self._unpacked is not None and self._unpacked[0] is block:
                self._unpacked = None
        recent = self._recent
        while recent and position >= self.first:
            recent.popleft()
            self.first += 1

    def read(self, start: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` entries from position ``start`` on, with their positions."""
        start = max(start, self.first)
        return list(zip(itertools.count(start), itertools.islice(self._from(start), limit)))

    def _from(self, start: int) -> Iterator[bytes]:
        at = self.first - self._skip  # the position of the first block's first entry
        for block in self._blocks:
            count = len(block.sizes)
            if start < at + count:
                yield from self._entries(block)[max(0, start - at) :]
            at += count
        yield from itertools.islice(self._recent, max(0, start - at), None)

    def _entries(self, block: _Block) -> list[bytes]:
        if self._unpacked is None or self._unpacked[0] is not block:
            self._unpacked = (block, block.entries())
        return self._unpacked[1]
