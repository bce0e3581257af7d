"""HPACK for the h2 door: stateless encoding of our header blocks, cached decoding of theirs.

Split from `h2wire` (the frame layer) so each stays small. Encoding uses literals without
indexing, so a block depends only on its headers and is cached by them; decoding goes
through `hpack`, with a bounded cache of blocks that cannot change its dynamic table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import hpack

if TYPE_CHECKING:
    from adapters.gateway.h2wire import H2Limits

Headers = Sequence[tuple[bytes, bytes]]
_CACHE_LIMIT = 512  # encoded blocks (ours, from a fixed set of headers)


def _hpack_int(value: int) -> bytes:
    """An HPACK integer with a 7-bit prefix (string lengths, Huffman bit clear)."""
    if value < 127:
        return bytes((value,))
    out = bytearray((127,))
    value -= 127
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_encoded: dict[tuple[tuple[bytes, bytes], ...], bytes] = {}


def encode(headers: tuple[tuple[bytes, bytes], ...]) -> bytes:
    """A header block of literals "without indexing": stateless, so cached by its headers."""
    block = _encoded.get(headers)
    if block is None:
        parts: list[bytes] = []
        for name, value in headers:
            parts += (b"\x00", _hpack_int(len(name)), name, _hpack_int(len(value)), value)
        block = b"".join(parts)
        if len(_encoded) >= _CACHE_LIMIT:
            _encoded.clear()
        _encoded[headers] = block
    return block


class HeaderList(list[tuple[bytes, bytes]]):
    """Decoded header fields, with the verdict of the decoder's `check` on them (None: fine)."""

    __slots__ = ("error",)

    def __init__(self, fields: Iterable[tuple[bytes, bytes]], error: str | None = None) -> None:
        super().__init__(fields)
        self.error = error


class BlockDecoder:
    """hpack's decoder, plus a cache of blocks that decode without touching its table.

    The cache is bounded in entries and in bytes (blocks plus decoded headers); past either
    bound it starts again empty. Decoding itself stops at `max_header_list` decoded bytes.
    `check`, when set, judges each decoded list once (cached with it): `HeaderList.error`.
    """

    __slots__ = ("_bytes", "_cache", "_d", "_max_bytes", "_max_entries", "check")

    def __init__(self, limits: H2Limits) -> None:
        self._d = hpack.Decoder(max_header_list_size=limits.max_header_list)
        self._cache: dict[bytes, HeaderList] = {}
        self.check: Callable[[Headers], str | None] | None = None
        self._bytes = 0
        self._max_entries = limits.hpack_cache_entries
        self._max_bytes = limits.hpack_cache_bytes

    def _table_state(self) -> tuple[int, int, int]:
        t = self._d.header_table
        entries = t.dynamic_entries
        return (len(entries), id(entries[0]) if entries else 0, t.maxsize)

    def decode(self, block: bytes) -> HeaderList:
        got = self._cache.get(block)
        if got is not None:
            return got
        before = self._table_state()
        headers = HeaderList((bytes(n), bytes(v)) for n, v in self._d.decode(block, raw=True))
        if self.check is not None:
            headers.error = self.check(headers)
        if self._table_state() != before:
            self._cache.clear()  # indices moved: earlier blocks may now mean other headers
            self._bytes = 0
        else:
            size = 2 * len(block) + sum(len(n) + len(v) + 32 for n, v in headers)
            if len(self._cache) >= self._max_entries or self._bytes + size > self._max_bytes:
                self._cache.clear()
                self._bytes = 0
            if size <= self._max_bytes:
                self._cache[block] = headers
                self._bytes += size
        return headers

    @property
    def cached_bytes(self) -> int:
        return self._bytes
