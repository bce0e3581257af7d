"""HTTP/2 at the frame level for the gRPC door: one connection's framing and flow control.

`Peer` is an asyncio protocol that reads frames, answers SETTINGS/PING itself, keeps both
directions' flow-control windows and hands HEADERS (decoded), DATA, RST_STREAM and GOAWAY to
its subclass: the client side of the door (`h2door`) or a connection to a replica
(`h2upstream`). Header blocks are decoded with `hpack` (a cache skips blocks that cannot
change the decoder's table: a gRPC client repeats the same indexed block every call) and
encoded without the dynamic table, so an encoded block depends only on its headers and is
cached by them. DATA the peer sends is credited back as it arrives; DATA we send waits in a
per-stream queue while the peer's window (stream or connection) is closed.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from collections.abc import Sequence
from typing import cast

import hpack

log = logging.getLogger(__name__)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE = range(9)
CONTINUATION = 9
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
# error codes
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 2, 3
REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 7, 8, 9

Headers = Sequence[tuple[bytes, bytes]]

_FRAME = struct.Struct(">BHBBL")  # length (24 bits as 8 + 16), type, flags, stream id
_U32 = struct.Struct(">L")
_SETTING = struct.Struct(">HL")
_DEFAULT_WINDOW = 65535
# What we let a peer send ahead of us: per stream, and per connection.
STREAM_WINDOW = 1 << 24
CONN_WINDOW = 1 << 26
MAX_FRAME = 1 << 20  # the largest frame we accept (16 KiB is the default)
_SETTINGS_PAYLOAD = _SETTING.pack(0x4, STREAM_WINDOW) + _SETTING.pack(0x5, MAX_FRAME)
_CACHE_LIMIT = 512


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return _FRAME.pack(n >> 16, n & 0xFFFF, ftype, flags, sid) + payload


def rst(sid: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, sid, _U32.pack(code))


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


class BlockDecoder:
    """hpack's decoder, plus a cache of blocks that decode without touching its table."""

    __slots__ = ("_cache", "_d")

    def __init__(self) -> None:
        self._d = hpack.Decoder()
        self._d.max_header_list_size = 1 << 20
        self._cache: dict[bytes, list[tuple[bytes, bytes]]] = {}

    def _table_state(self) -> tuple[int, int, int]:
        t = self._d.header_table
        entries = t.dynamic_entries
        return (len(entries), id(entries[0]) if entries else 0, t.maxsize)

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        got = self._cache.get(block)
        if got is not None:
            return got
        before = self._table_state()
        headers = [(bytes(n), bytes(v)) for n, v in self._d.decode(block, raw=True)]
        if self._table_state() != before:
            self._cache.clear()  # indices moved: earlier blocks may now mean other headers
        else:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[block] = headers
        return headers


class ProtocolViolation(Exception):
    """The peer broke HTTP/2; the connection is closed with `code`."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Peer(asyncio.Protocol):
    """One HTTP/2 connection: frames, SETTINGS, PING, windows. Subclasses handle streams."""

    expect_preface = False  # the server side reads the client's preface first

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._need = len(PREFACE) if self.expect_preface else 9
        self._preface = self.expect_preface
        self.decoder = BlockDecoder()
        self._hblock: bytearray | None = None  # HEADERS awaiting CONTINUATION
        self._hsid = 0
        self._hflags = 0
        # sending: the peer's limits
        self.initial_window = _DEFAULT_WINDOW
        self.max_frame = 16384
        self.max_streams = 1 << 31
        self.send_window = _DEFAULT_WINDOW
        self.windows: dict[int, int] = {}  # open streams we may still send on
        self.blocked: dict[int, deque[tuple[int, bytes, bool]]] = {}
        # receiving: what we owe the peer in WINDOW_UPDATEs
        self._recv_conn = 0
        self._recv: dict[int, int] = {}
        self.closed = False
        self.seen = False  # bytes arrived (cleared by whoever sweeps idle connections)

    # --- asyncio.Protocol ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        head = b"" if self.expect_preface else PREFACE
        self.transport.write(
            head
            + frame(SETTINGS, 0, 0, _SETTINGS_PAYLOAD)
            + frame(WINDOW_UPDATE, 0, 0, _U32.pack(CONN_WINDOW - _DEFAULT_WINDOW))
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.on_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.seen = True
        buf = self._buf
        if buf:
            buf += data
            if len(buf) < self._need:
                return
            data = bytes(buf)
            buf.clear()
        elif len(data) < self._need:
            buf += data
            return
        try:
            pos = self._frames(data)
        except ProtocolViolation as exc:
            self.fail_connection(exc.code, str(exc))
            return
        except Exception as exc:  # a bug or garbage must not leave the connection hanging
            log.warning("HTTP/2 connection dropped: %r", exc)
            self.fail_connection(INTERNAL_ERROR, "internal error")
            return
        if pos < len(data):
            buf += data[pos:]

    def _frames(self, data: bytes) -> int:
        pos, n = 0, len(data)
        if self._preface:
            if data[: len(PREFACE)] != PREFACE:
                raise ProtocolViolation(PROTOCOL_ERROR, "not an HTTP/2 prior-knowledge client")
            self._preface = False
            pos = len(PREFACE)
        while not self.closed:
            if n - pos < 9:
                self._need = 9
                break
            hi, lo, ftype, flags, sid = _FRAME.unpack_from(data, pos)
            end = pos + 9 + ((hi << 16) | lo)
            if end > n:
                self._need = end - pos
                break
            payload = data[pos + 9 : end]
            pos = end
            sid &= 0x7FFFFFFF
            if self._hblock is not None and ftype != CONTINUATION:
                raise ProtocolViolation(PROTOCOL_ERROR, "expected CONTINUATION")
            if ftype == DATA:
                self._on_data_frame(sid, flags, payload)
            elif ftype == HEADERS:
                self._on_headers_frame(sid, flags, payload)
            elif ftype == CONTINUATION:
                if self._hblock is None or sid != self._hsid:
                    raise ProtocolViolation(PROTOCOL_ERROR, "unexpected CONTINUATION")
                self._hblock += payload
                if flags & END_HEADERS:
                    block, self._hblock = bytes(self._hblock), None
                    self._deliver_headers(sid, self._hflags, block)
            elif ftype == WINDOW_UPDATE:
                self._on_window_update(sid, _U32.unpack(payload)[0] & 0x7FFFFFFF)
            elif ftype == SETTINGS:
                if not flags & ACK:
                    self._on_settings(payload)
            elif ftype == PING:
                if not flags & ACK:
                    self.write(frame(PING, ACK, 0, payload))
            elif ftype == RST_STREAM:
                self._forget(sid)
                self.on_reset(sid, _U32.unpack(payload)[0])
            elif ftype == GOAWAY:
                last, code = struct.unpack_from(">LL", payload)
                self.on_goaway(last & 0x7FFFFFFF, code, payload[8:])
            elif ftype == PUSH_PROMISE:
                raise ProtocolViolation(PROTOCOL_ERROR, "PUSH_PROMISE is not enabled")
            # PRIORITY and unknown frame types are ignored, as RFC 9113 says
        return pos

    def head_incomplete(self) -> bool:
        """Part of a frame header, or of a HEADERS block, is waiting for its rest."""
        buf = self._buf
        return self._hblock is not None or (
            bool(buf) and (len(buf) < 9 or buf[3] in (HEADERS, CONTINUATION))
        )

    def _on_data_frame(self, sid: int, flags: int, payload: bytes) -> None:
        size = len(payload)
        if flags & PADDED:
            payload = payload[1 : size - payload[0]]
        # Credit the connection at once (what a stream may hold is limited per stream) and
        # the stream when half its window is used and more may come.
        self._recv_conn += size
        if self._recv_conn >= CONN_WINDOW >> 1:
            self.write(frame(WINDOW_UPDATE, 0, 0, _U32.pack(self._recv_conn)))
            self._recv_conn = 0
        end = bool(flags & END_STREAM)
        if end:
            self._recv.pop(sid, None)
        else:
            got = self._recv.get(sid, 0) + size
            if got >= STREAM_WINDOW >> 1:
                self.write(frame(WINDOW_UPDATE, 0, sid, _U32.pack(got)))
                got = 0
            self._recv[sid] = got
        self.on_data(sid, payload, end)

    def _on_headers_frame(self, sid: int, flags: int, payload: bytes) -> None:
        if flags & (PADDED | PRIORITY_FLAG):
            start, stop = 0, len(payload)
            if flags & PADDED:
                start, stop = 1, stop - payload[0]
            if flags & PRIORITY_FLAG:
                start += 5
            payload = payload[start:stop]
        if flags & END_HEADERS:
            self._deliver_headers(sid, flags, payload)
        else:
            self._hblock, self._hsid, self._hflags = bytearray(payload), sid, flags

    def _deliver_headers(self, sid: int, flags: int, block: bytes) -> None:
        try:
            headers = self.decoder.decode(block)
        except hpack.HPACKError as exc:
            raise ProtocolViolation(COMPRESSION_ERROR, f"bad header block: {exc}") from exc
        end = bool(flags & END_STREAM)
        if end:
            self._recv.pop(sid, None)
        self.on_headers(sid, headers, end)

    def _on_settings(self, payload: bytes) -> None:
        delta = 0
        for i in range(0, len(payload) - 5, 6):
            key, value = _SETTING.unpack_from(payload, i)
            if key == 0x4:
                if value > 0x7FFFFFFF:
                    raise ProtocolViolation(FLOW_CONTROL_ERROR, "window too large")
                delta = value - self.initial_window
                self.initial_window = value
            elif key == 0x5:
                self.max_frame = value
            elif key == 0x3:
                self.max_streams = value
        self.write(frame(SETTINGS, ACK, 0))
        if delta:
            for sid in self.windows:
                self.windows[sid] += delta
            if delta > 0:
                self._drain_all()
        self.on_settings()

    def _on_window_update(self, sid: int, inc: int) -> None:
        if sid == 0:
            self.send_window += inc
            self._drain_all()
        elif sid in self.windows:
            self.windows[sid] += inc
            if sid in self.blocked:
                self._drain(sid)

    # --- sending ---------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def open_stream(self, sid: int) -> None:
        self.windows[sid] = self.initial_window

    def send_message(
        self, sid: int, block: bytes | None, data: bytes, trailers: bytes | None, end: bool
    ) -> None:
        """HEADERS (if `block`), DATA, then trailing HEADERS (if `trailers`), in one write when
        the windows allow; `end` ends the stream after the last of them."""
        n = len(data)
        if (
            sid not in self.blocked
            and n <= self.max_frame
            and n <= self.send_window
            and n <= self.windows.get(sid, -1)
            and (block is None or len(block) <= self.max_frame)
            and (trailers is None or len(trailers) <= self.max_frame)
        ):
            out = frame(HEADERS, END_HEADERS, sid, block) if block is not None else b""
            if trailers is None:
                out += frame(DATA, END_STREAM if end else 0, sid, data)
            else:
                out += frame(DATA, 0, sid, data)
                out += frame(HEADERS, END_HEADERS | (END_STREAM if end else 0), sid, trailers)
            self.write(out)
            self.send_window -= n
            if end:
                self.windows.pop(sid, None)
            else:
                self.windows[sid] -= n
            return
        if block is not None:
            self.send_headers(sid, block, False)
        self.send_data(sid, data, end and trailers is None)
        if trailers is not None:
            self.send_headers(sid, trailers, end)

    def send_headers(self, sid: int, block: bytes, end: bool) -> None:
        q = self.blocked.get(sid)
        if q is not None:
            q.append((HEADERS, block, end))
            return
        self.write(self._headers_frames(sid, block, end))
        if end:
            self.windows.pop(sid, None)

    def _headers_frames(self, sid: int, block: bytes, end: bool) -> bytes:
        flags = END_STREAM if end else 0
        limit = self.max_frame
        if len(block) <= limit:
            return frame(HEADERS, flags | END_HEADERS, sid, block)
        parts = [frame(HEADERS, flags, sid, block[:limit])]
        for i in range(limit, len(block), limit):
            last = i + limit >= len(block)
            parts.append(frame(CONTINUATION, END_HEADERS if last else 0, sid, block[i : i + limit]))
        return b"".join(parts)

    def send_data(self, sid: int, data: bytes, end: bool) -> None:
        q = self.blocked.get(sid)
        if q is not None:
            q.append((DATA, data, end))
            return
        rest = self._push(sid, data, end)
        if rest is not None:
            self.blocked[sid] = deque(((DATA, rest, end),))

    def _push(self, sid: int, data: bytes, end: bool) -> bytes | None:
        """Write what the windows allow; return what is left (None when all went)."""
        n = len(data)
        window = self.windows.get(sid)
        if window is None:
            return None  # stream gone (reset): drop
        win = min(self.send_window, window)
        if n == 0:
            self.write(frame(DATA, END_STREAM if end else 0, sid))
            if end:
                self.windows.pop(sid, None)
            return None
        if win <= 0:
            return data
        limit = self.max_frame
        if n <= win and n <= limit:
            self.write(frame(DATA, END_STREAM if end else 0, sid, data))
            off = n
        else:
            parts, off = [], 0
            while off < n and win > 0:
                k = min(n - off, win, limit)
                last = off + k == n
                parts.append(
                    frame(DATA, END_STREAM if last and end else 0, sid, data[off : off + k])
                )
                off += k
                win -= k
            self.write(b"".join(parts))
        self.send_window -= off
        if off == n:
            if end:
                self.windows.pop(sid, None)
            else:
                self.windows[sid] = window - off
            return None
        self.windows[sid] = window - off
        return data[off:]

    def _drain(self, sid: int) -> None:
        q = self.blocked[sid]
        while q:
            kind, payload, end = q[0]
            if kind == HEADERS:
                q.popleft()
                self.write(self._headers_frames(sid, payload, end))
                if end:
                    self.windows.pop(sid, None)
                continue
            rest = self._push(sid, payload, end)
            if rest is not None:
                q[0] = (DATA, rest, end)
                return
            q.popleft()
        del self.blocked[sid]

    def _drain_all(self) -> None:
        for sid in list(self.blocked):
            if self.send_window <= 0:
                return
            self._drain(sid)

    def reset_stream(self, sid: int, code: int) -> None:
        self._forget(sid)
        self.write(rst(sid, code))

    def _forget(self, sid: int) -> None:
        self.windows.pop(sid, None)
        self.blocked.pop(sid, None)
        self._recv.pop(sid, None)

    def fail_connection(self, code: int, message: str) -> None:
        if self.closed or self.transport is None:
            return
        self.transport.write(frame(GOAWAY, 0, 0, struct.pack(">LL", 0, code) + message.encode()))
        self.closed = True
        self.transport.close()

    # --- for subclasses ----------------------------------------------------------------
    def on_headers(self, sid: int, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        raise NotImplementedError

    def on_data(self, sid: int, data: bytes, end: bool) -> None:
        raise NotImplementedError

    def on_reset(self, sid: int, code: int) -> None:
        raise NotImplementedError

    def on_goaway(self, last_sid: int, code: int, debug: bytes) -> None:
        pass

    def on_lost(self, exc: Exception | None) -> None:
        pass

    def on_settings(self) -> None:
        pass
