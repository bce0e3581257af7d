"""HTTP/2 at the frame level for the gRPC door: one connection's framing and flow control.

`Peer` is an asyncio protocol that reads frames, answers SETTINGS/PING itself, keeps both
directions' flow-control windows and hands HEADERS (decoded), DATA, RST_STREAM and GOAWAY to
its subclass: the client side of the door (`h2door`) or a connection to a replica
(`h2upstream`). Header blocks are decoded with `hpack` (a bounded cache skips blocks that
cannot change the decoder's table: a gRPC client repeats the same indexed block every call)
and encoded without the dynamic table, so an encoded block depends only on its headers and is
cached by them.

Everything a peer can make us hold or do is bounded by `H2Limits` (RFC 9113 checks, Envoy's
`http2_protocol_options` for the defaults): frame sizes against what we advertised, SETTINGS
values (section 6.5.2), header blocks and their CONTINUATION frames, concurrent streams, the
windows we granted (DATA past them is a FLOW_CONTROL_ERROR), and the rate of resets and of
control frames (GOAWAY ENHANCE_YOUR_CALM). DATA received is credited back only when the
subclass says it was consumed (`credit`); DATA we send waits in a per-stream queue while the
peer's window is closed or the transport asked us to pause writing, and the subclass hears
when a stream's queue has drained (`on_drained`), which is how backpressure crosses the
gateway.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import hpack

from adapters.gateway.h2hpack import BlockDecoder
from adapters.gateway.h2hpack import encode as encode  # re-exported: the doors use it
from adapters.gateway.h2rules import trailers_error

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
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 5, 6, 7, 8, 9
ENHANCE_YOUR_CALM = 0xB
# SETTINGS identifiers
S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT_STREAMS = 0x1, 0x2, 0x3
S_INITIAL_WINDOW_SIZE, S_MAX_FRAME_SIZE, S_MAX_HEADER_LIST_SIZE = 0x4, 0x5, 0x6
MAX_WINDOW = 0x7FFFFFFF
MIN_MAX_FRAME, MAX_MAX_FRAME = 1 << 14, (1 << 24) - 1

Headers = Sequence[tuple[bytes, bytes]]

_FRAME = struct.Struct(">BHBBL")  # length (24 bits as 8 + 16), type, flags, stream id
_U32 = struct.Struct(">L")
_SETTING = struct.Struct(">HL")
_DEFAULT_WINDOW = 65535
LINGER_S = 1.0  # after GOAWAY, input is read and dropped this long before the close


@dataclass(frozen=True, slots=True)
class H2Limits:
    """What one HTTP/2 connection lets its peer do (the `h2_*` settings of `GatewayConfig`)."""

    max_concurrent_streams: int = 128  # advertised; more open streams get REFUSED_STREAM
    stream_window: int = 1 << 24  # what a peer may send ahead on one stream
    connection_window: int = 1 << 26  # ... and on the whole connection
    max_frame: int = 1 << 20  # advertised SETTINGS_MAX_FRAME_SIZE; larger frames end it
    max_header_list: int = 64 << 10  # a header block, compressed and decoded
    max_continuations: int = 32  # CONTINUATION frames in one header block
    max_resets_per_s: int = 200  # RST_STREAM received + streams refused
    max_control_frames_per_s: int = 1000  # PING, SETTINGS, PRIORITY, unknown types
    max_empty_frames: int = 1  # consecutive frames without payload or end flag
    max_outbound_control_frames: int = 1000  # answers queued while the peer is not reading
    hpack_cache_entries: int = 64
    hpack_cache_bytes: int = 256 << 10

    def __post_init__(self) -> None:
        if not MIN_MAX_FRAME <= self.max_frame <= MAX_MAX_FRAME:
            raise ValueError(f"max_frame {self.max_frame} must be in [2^14, 2^24-1]")
        for name in ("stream_window", "connection_window"):
            if not _DEFAULT_WINDOW <= getattr(self, name) <= MAX_WINDOW:
                raise ValueError(f"{name} must be in [65535, 2^31-1]")

    def settings_payload(self, *, client: bool) -> bytes:
        items = [
            (S_INITIAL_WINDOW_SIZE, self.stream_window),
            (S_MAX_FRAME_SIZE, self.max_frame),
            (S_MAX_HEADER_LIST_SIZE, self.max_header_list),
        ]
        if client:
            items.append((S_ENABLE_PUSH, 0))
        else:
            items.append((S_MAX_CONCURRENT_STREAMS, self.max_concurrent_streams))
        return b"".join(_SETTING.pack(k, v) for k, v in items)


DEFAULT_LIMITS = H2Limits()


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return _FRAME.pack(n >> 16, n & 0xFFFF, ftype, flags, sid) + payload


def rst(sid: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, sid, _U32.pack(code))


class ProtocolViolation(Exception):
    """The peer broke HTTP/2; the connection is closed with `code`."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Peer(asyncio.Protocol):
    """One HTTP/2 connection: frames, SETTINGS, PING, windows. Subclasses handle streams."""

    expect_preface = False  # the server side reads the client's preface first
    # True: the connection window is credited as DATA arrives and only stream windows wait
    # for `credit` (a replica connection shared by many clients must not stall on one).
    credit_connection_on_arrival = False

    def __init__(self, limits: H2Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._need = len(PREFACE) if self.expect_preface else 9
        self._preface = self.expect_preface
        self.decoder = BlockDecoder(limits)
        self._hblock: bytearray | None = None  # HEADERS awaiting CONTINUATION
        self._hsid = 0
        self._hflags = 0
        self._hframes = 0
        # sending: the peer's limits
        self.initial_window = _DEFAULT_WINDOW
        self.max_frame = 16384
        self.max_streams = 1 << 31
        self.send_window = _DEFAULT_WINDOW
        self.windows: dict[int, int] = {}  # open streams we may still send on
        self.blocked: dict[int, deque[tuple[int, bytes, bool]]] = {}
        self.paused = False  # the transport asked us to stop writing
        # receiving: what the peer may still send (the windows we granted) and what we owe
        self._in_conn = _DEFAULT_WINDOW
        self._owed_conn = 0
        self._in: dict[int, int] = {}  # streams the peer may still send DATA on
        self._owed: dict[int, int] = {}
        self._peer_sid = 0  # the highest stream id the peer opened
        # streams the peer ended (END_STREAM) that may still be open our way (half-closed
        # remote); pruned to those once it grows past a few times the stream limit
        self._remote_ended: set[int] = set()
        self._ended_cap = 2 * limits.max_concurrent_streams + 64
        # the peer's streams we reset lately (oldest first, as many): frames it sent before
        # it saw our RST_STREAM are ignored; on other closed streams they are an error
        self._reset_by_us: dict[int, None] = {}
        self._hprio_self = False  # the HEADERS being read names itself as its dependency
        self._our_sid = 0  # ... and we opened
        # flood accounting (one-second windows, the clock read only past a limit)
        self._resets = self._controls = self._empty = self._out_controls = 0
        self._resets_t = self._controls_t = time.monotonic()
        self._after: list[Callable[[], None]] = []  # `after_read`
        self.closed = False
        self.seen = False  # bytes arrived (cleared by whoever reaps idle connections)
        self.progress = False  # DATA went out (cleared by whoever reaps stalled writers)

    # --- asyncio.Protocol ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        head = b"" if self.expect_preface else PREFACE
        window = self.limits.connection_window
        self._in_conn = window
        self.transport.write(
            head
            + frame(SETTINGS, 0, 0, self.limits.settings_payload(client=not self.expect_preface))
            + frame(WINDOW_UPDATE, 0, 0, _U32.pack(window - _DEFAULT_WINDOW))
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.on_lost(exc)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._out_controls = 0
        self.progress = True
        if self.blocked:
            try:
                self._drain_all()
            except Exception as exc:  # as in data_received: never leave it hanging
                log.warning("HTTP/2 connection dropped: %r", exc)
                self.fail_connection(INTERNAL_ERROR, "internal error")

    def data_received(self, data: bytes) -> None:
        if self.closed:  # lingering after GOAWAY: read and drop
            return
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
            if self._after:
                after, self._after = self._after, []
                for fn in after:
                    fn()
        except ProtocolViolation as exc:
            self.fail_connection(exc.code, str(exc))
            return
        except Exception as exc:  # a bug or garbage must not leave the connection hanging
            log.warning("HTTP/2 connection dropped: %r", exc)
            self.fail_connection(INTERNAL_ERROR, "internal error")
            return
        if pos < len(data) and not self.closed:
            buf += data[pos:]

    def _frames(self, data: bytes) -> int:
        pos, n = 0, len(data)
        if self._preface:
            if data[: len(PREFACE)] != PREFACE:
                raise ProtocolViolation(PROTOCOL_ERROR, "not an HTTP/2 prior-knowledge client")
            self._preface = False
            pos = len(PREFACE)
        max_frame = self.limits.max_frame
        while not self.closed:
            if n - pos < 9:
                self._need = 9
                break
            hi, lo, ftype, flags, sid = _FRAME.unpack_from(data, pos)
            length = (hi << 16) | lo
            if length > max_frame:
                raise ProtocolViolation(
                    FRAME_SIZE_ERROR,
                    f"a {length}-byte frame is over the advertised SETTINGS_MAX_FRAME_SIZE "
                    f"{max_frame}",
                )
            end = pos + 9 + length
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
                self._on_continuation(sid, flags, payload)
            elif ftype == WINDOW_UPDATE:
                self._on_window_update(sid, payload)
            elif ftype == SETTINGS:
                self._on_settings(sid, flags, payload)
            elif ftype == PING:
                self._on_ping(sid, flags, payload)
            elif ftype == RST_STREAM:
                self._on_rst_stream(sid, payload)
            elif ftype == GOAWAY:
                if sid or length < 8:
                    raise ProtocolViolation(PROTOCOL_ERROR, "malformed GOAWAY")
                last, code = struct.unpack_from(">LL", payload)
                self.on_goaway(last & 0x7FFFFFFF, code, payload[8:])
            elif ftype == PUSH_PROMISE:
                raise ProtocolViolation(PROTOCOL_ERROR, "PUSH_PROMISE is not enabled")
            else:  # PRIORITY and unknown frame types are ignored, as RFC 9113 says
                if ftype == PRIORITY:
                    if sid == 0:
                        raise ProtocolViolation(PROTOCOL_ERROR, "PRIORITY on stream 0")
                    if length != 5:
                        raise ProtocolViolation(FRAME_SIZE_ERROR, "PRIORITY payload not 5 bytes")
                    if _U32.unpack_from(payload)[0] & MAX_WINDOW == sid:
                        self._stream_error(sid, PROTOCOL_ERROR, "a stream cannot depend on itself")
                self._control()
        return pos

    def head_incomplete(self) -> bool:
        """Part of a frame header, or of a HEADERS block, is waiting for its rest."""
        buf = self._buf
        return self._hblock is not None or (
            bool(buf) and (len(buf) < 9 or buf[3] in (HEADERS, CONTINUATION))
        )

    # --- frames in ---------------------------------------------------------------------
    def _peers(self, sid: int) -> bool:
        """`sid` is a stream id the peer opens (odd ones from a client)."""
        return (sid & 1) == (1 if self.expect_preface else 0)

    def _idle(self, sid: int) -> bool:
        return sid > (self._peer_sid if self._peers(sid) else self._our_sid)

    def _on_data_frame(self, sid: int, flags: int, payload: bytes) -> None:
        size = len(payload)
        if sid == 0:
            raise ProtocolViolation(PROTOCOL_ERROR, "DATA on stream 0")
        if size > self._in_conn:
            raise ProtocolViolation(FLOW_CONTROL_ERROR, "DATA past the connection window")
        self._in_conn -= size
        if self.credit_connection_on_arrival:
            self._credit_conn(size)
        pad = 0
        if flags & PADDED:
            if size == 0 or payload[0] >= size:
                raise ProtocolViolation(PROTOCOL_ERROR, "DATA padding longer than the frame")
            pad = payload[0] + 1
            payload = payload[1 : size - payload[0]]
        window = self._in.get(sid)
        if window is None:  # closed, reset, or never opened
            if self._idle(sid):
                raise ProtocolViolation(PROTOCOL_ERROR, f"DATA on idle stream {sid}")
            self.credit(sid, size)  # dropped: the connection window gets it back
            if sid in self._remote_ended and sid in self.windows:
                self._stream_error(sid, STREAM_CLOSED, f"DATA after END_STREAM on stream {sid}")
            else:
                self._on_closed(sid, "DATA")
            return
        if size > window:
            raise ProtocolViolation(FLOW_CONTROL_ERROR, f"DATA past stream {sid}'s window")
        end = bool(flags & END_STREAM)
        if size == 0 and not end:
            self._empty_frame()
        else:
            self._empty = 0
        if end:
            del self._in[sid]
            self._owed.pop(sid, None)
            self._ended(sid)
        else:
            self._in[sid] = window - size
        if pad:
            self.credit(sid, pad)
        self.on_data(sid, payload, end)

    def _on_headers_frame(self, sid: int, flags: int, payload: bytes) -> None:
        if sid == 0:
            raise ProtocolViolation(PROTOCOL_ERROR, "HEADERS on stream 0")
        if flags & (PADDED | PRIORITY_FLAG):
            start, stop = 0, len(payload)
            if flags & PADDED:
                if not payload:
                    raise ProtocolViolation(PROTOCOL_ERROR, "HEADERS padding missing")
                start, stop = 1, stop - payload[0]
            prio_at = start
            if flags & PRIORITY_FLAG:
                start += 5
            if stop < start:
                raise ProtocolViolation(PROTOCOL_ERROR, "HEADERS padding longer than the frame")
            if flags & PRIORITY_FLAG:
                self._hprio_self = _U32.unpack_from(payload, prio_at)[0] & MAX_WINDOW == sid
            payload = payload[start:stop]
        if len(payload) > self.limits.max_header_list:
            raise ProtocolViolation(ENHANCE_YOUR_CALM, "header block over max_header_list")
        if flags & END_HEADERS:
            self._empty = 0
            self._deliver_headers(sid, flags, payload)
        else:
            if payload:
                self._empty = 0
            else:
                self._empty_frame()
            self._hblock, self._hsid, self._hflags, self._hframes = (
                bytearray(payload),
                sid,
                flags,
                0,
            )

    def _on_continuation(self, sid: int, flags: int, payload: bytes) -> None:
        block = self._hblock
        if block is None or sid != self._hsid:
            raise ProtocolViolation(PROTOCOL_ERROR, "unexpected CONTINUATION")
        self._hframes += 1
        if self._hframes > self.limits.max_continuations:
            raise ProtocolViolation(ENHANCE_YOUR_CALM, "too many CONTINUATION frames")
        if len(block) + len(payload) > self.limits.max_header_list:
            raise ProtocolViolation(ENHANCE_YOUR_CALM, "header block over max_header_list")
        if payload:
            self._empty = 0
        elif not flags & END_HEADERS:
            self._empty_frame()
        block += payload
        if flags & END_HEADERS:
            self._hblock = None
            self._deliver_headers(sid, self._hflags, bytes(block))

    def _deliver_headers(self, sid: int, flags: int, block: bytes) -> None:
        # Decoded even for a stream we will refuse: HPACK state is per connection.
        try:
            headers = self.decoder.decode(block)
        except hpack.OversizedHeaderListError as exc:
            raise ProtocolViolation(ENHANCE_YOUR_CALM, f"header list too large: {exc}") from exc
        except hpack.HPACKError as exc:
            raise ProtocolViolation(COMPRESSION_ERROR, f"bad header block: {exc}") from exc
        end = bool(flags & END_STREAM)
        self_dependent, self._hprio_self = self._hprio_self, False
        if self._peers(sid):
            if not self.expect_preface:
                raise ProtocolViolation(PROTOCOL_ERROR, "server-initiated streams are disabled")
            if sid > self._peer_sid:  # a new stream
                self._peer_sid = sid
                error = "a stream cannot depend on itself" if self_dependent else headers.error
                if error is not None:  # a malformed request (RFC 9113 §8.1.1)
                    self._stream_error(sid, PROTOCOL_ERROR, error)
                    return
                if end:
                    self._ended(sid)
                else:
                    self._in[sid] = self.limits.stream_window
            elif sid in self._in:  # trailers: they end the request, and hold no pseudo-header
                error = (
                    "a stream cannot depend on itself"
                    if self_dependent
                    else "HEADERS without END_STREAM after the request's headers"
                    if not end
                    else trailers_error(headers)
                )
                if error is not None:
                    self._stream_error(sid, PROTOCOL_ERROR, error)
                    return
                del self._in[sid]
                self._owed.pop(sid, None)
                self._ended(sid)
            elif sid in self._remote_ended and sid in self.windows:
                self._stream_error(sid, STREAM_CLOSED, f"HEADERS after END_STREAM on stream {sid}")
                return
            else:
                self._on_closed(sid, "HEADERS")
                return
        else:
            if sid > self._our_sid:
                raise ProtocolViolation(PROTOCOL_ERROR, f"HEADERS on idle stream {sid}")
            if end:
                self._in.pop(sid, None)
                self._owed.pop(sid, None)
        self.on_headers(sid, headers, end)

    def _on_settings(self, sid: int, flags: int, payload: bytes) -> None:
        if sid:
            raise ProtocolViolation(PROTOCOL_ERROR, "SETTINGS on a stream")
        self._control()
        if flags & ACK:
            if payload:
                raise ProtocolViolation(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise ProtocolViolation(FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6")
        delta = 0
        for i in range(0, len(payload), 6):
            key, value = _SETTING.unpack_from(payload, i)
            if key == S_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ProtocolViolation(
                        FLOW_CONTROL_ERROR, f"SETTINGS_INITIAL_WINDOW_SIZE {value} > 2^31-1"
                    )
                delta += value - self.initial_window
                self.initial_window = value
            elif key == S_MAX_FRAME_SIZE:
                if not MIN_MAX_FRAME <= value <= MAX_MAX_FRAME:
                    raise ProtocolViolation(
                        PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value} not in [2^14, 2^24-1]"
                    )
                self.max_frame = value
            elif key == S_MAX_CONCURRENT_STREAMS:
                self.max_streams = value
            elif key == S_ENABLE_PUSH and (value > 1 or (value == 1 and not self.expect_preface)):
                raise ProtocolViolation(PROTOCOL_ERROR, f"SETTINGS_ENABLE_PUSH {value}")
            # HEADER_TABLE_SIZE: our encoder uses no dynamic table; unknown ids are ignored
        if delta:
            for s, w in self.windows.items():
                if w + delta > MAX_WINDOW:
                    raise ProtocolViolation(FLOW_CONTROL_ERROR, f"stream {s}'s window > 2^31-1")
                self.windows[s] = w + delta
        self._write_control(frame(SETTINGS, ACK, 0))
        if delta > 0:
            self._drain_all()
        self.on_settings()

    def _on_ping(self, sid: int, flags: int, payload: bytes) -> None:
        if sid:
            raise ProtocolViolation(PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise ProtocolViolation(FRAME_SIZE_ERROR, "PING payload not 8 bytes")
        self._control()
        if not flags & ACK:
            self._write_control(frame(PING, ACK, 0, payload))

    def _on_rst_stream(self, sid: int, payload: bytes) -> None:
        if sid == 0 or len(payload) != 4:
            raise ProtocolViolation(
                PROTOCOL_ERROR if sid == 0 else FRAME_SIZE_ERROR, "malformed RST_STREAM"
            )
        if self._idle(sid):
            raise ProtocolViolation(PROTOCOL_ERROR, f"RST_STREAM on idle stream {sid}")
        self.count_reset()
        self._forget(sid)
        self.on_reset(sid, _U32.unpack(payload)[0])

    def _on_window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ProtocolViolation(FRAME_SIZE_ERROR, "WINDOW_UPDATE payload not 4 bytes")
        inc = _U32.unpack(payload)[0] & 0x7FFFFFFF
        if inc == 0:
            raise ProtocolViolation(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
        if sid == 0:
            self.send_window += inc
            if self.send_window > MAX_WINDOW:
                raise ProtocolViolation(FLOW_CONTROL_ERROR, "connection window > 2^31-1")
            self._drain_all()
        elif sid in self.windows:
            window = self.windows[sid] + inc
            if window > MAX_WINDOW:
                self._stream_error(sid, FLOW_CONTROL_ERROR, f"stream {sid}'s window > 2^31-1")
                return
            self.windows[sid] = window
            if sid in self.blocked:
                self._drain(sid)
        elif self._idle(sid):
            raise ProtocolViolation(PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {sid}")

    # --- floods ------------------------------------------------------------------------
    def _control(self) -> None:
        self._controls += 1
        if self._controls > self.limits.max_control_frames_per_s:
            now = time.monotonic()
            if now - self._controls_t < 1.0:
                raise ProtocolViolation(
                    ENHANCE_YOUR_CALM, "too many PING/SETTINGS/PRIORITY frames per second"
                )
            self._controls, self._controls_t = 1, now

    def _ended(self, sid: int) -> None:
        """The peer ended `sid` (END_STREAM): later DATA or HEADERS on it are STREAM_CLOSED."""
        ended = self._remote_ended
        ended.add(sid)
        if len(ended) > self._ended_cap:
            self._remote_ended = {s for s in ended if s in self.windows}

    def _on_closed(self, sid: int, what: str) -> None:
        """A frame on a closed stream (RFC 9113 §5.1): ignored when we reset the stream (it
        may have been sent before our RST_STREAM arrived), else a connection error:
        STREAM_CLOSED, or PROTOCOL_ERROR for HEADERS on a stream id never seen ending (a new
        stream must have a higher id than every earlier one, §5.1.1). Only on the server
        side: a replica connection is shared by many calls and kept lenient."""
        if self.expect_preface and self._peers(sid) and sid not in self._reset_by_us:
            if what == "HEADERS" and sid not in self._remote_ended:
                raise ProtocolViolation(
                    PROTOCOL_ERROR, f"HEADERS on stream {sid}, not above earlier streams"
                )
            raise ProtocolViolation(STREAM_CLOSED, f"{what} on closed stream {sid}")

    def _resetting(self, sid: int) -> None:
        """We reset the peer's stream `sid` (remembered for `_on_closed`, a bounded number)."""
        if self._peers(sid):
            recent = self._reset_by_us
            recent[sid] = None
            if len(recent) > self._ended_cap:
                del recent[next(iter(recent))]

    def _stream_error(self, sid: int, code: int, message: str) -> None:
        """A stream error (RFC 9113 §5.4.2): RST_STREAM `code`, the connection goes on. On an
        idle stream, which cannot be reset, a connection error instead (§5.4 allows it)."""
        if self._idle(sid):
            raise ProtocolViolation(code, message)
        log.debug("HTTP/2 stream %d reset (error %d): %s", sid, code, message)
        self.count_reset()
        self._forget(sid)
        self._resetting(sid)
        self._write_control(rst(sid, code))
        self.on_reset(sid, code)

    def count_reset(self) -> None:
        """A stream reset by the peer or refused by us (rapid reset, CVE-2023-44487)."""
        self._resets += 1
        if self._resets > self.limits.max_resets_per_s:
            now = time.monotonic()
            if now - self._resets_t < 1.0:
                raise ProtocolViolation(ENHANCE_YOUR_CALM, "too many streams reset per second")
            self._resets, self._resets_t = 1, now

    def _empty_frame(self) -> None:
        self._empty += 1
        if self._empty > self.limits.max_empty_frames:
            raise ProtocolViolation(ENHANCE_YOUR_CALM, "consecutive frames without payload")

    def _write_control(self, data: bytes) -> None:
        """Answers to the peer's frames: bounded while the peer does not read them."""
        if self.paused:
            self._out_controls += 1
            if self._out_controls > self.limits.max_outbound_control_frames:
                raise ProtocolViolation(ENHANCE_YOUR_CALM, "the peer does not read its answers")
        self.write(data)

    # --- flow control in -------------------------------------------------------------
    def credit(self, sid: int, n: int) -> None:
        """`n` bytes of DATA received on `sid` were consumed: let the peer send as much again."""
        if n <= 0:
            return
        if sid in self._in:
            owed = self._owed.get(sid, 0) + n
            if owed >= self.limits.stream_window >> 1:
                self._in[sid] += owed
                self.write(frame(WINDOW_UPDATE, 0, sid, _U32.pack(owed)))
                owed = 0
            self._owed[sid] = owed
        if not self.credit_connection_on_arrival:
            self._credit_conn(n)

    def _credit_conn(self, n: int) -> None:
        owed = self._owed_conn + n
        if owed >= self.limits.connection_window >> 1:
            self._in_conn += owed
            self.write(frame(WINDOW_UPDATE, 0, 0, _U32.pack(owed)))
            owed = 0
        self._owed_conn = owed

    def after_read(self, fn: Callable[[], None]) -> None:
        """Run `fn` once every frame of the current read is handled: a call whose stream is
        reset in the same read (rapid reset) never reaches a replica."""
        self._after.append(fn)

    def backlogged(self, sid: int) -> bool:
        """Data for `sid` waits here for the peer's window or for the transport."""
        return sid in self.blocked

    # --- sending ---------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def open_stream(self, sid: int) -> None:
        """We may send on `sid` now (a stream the peer opened, or our own new one)."""
        self.windows[sid] = self.initial_window
        if not self._peers(sid):
            self._our_sid = sid
            self._in[sid] = self.limits.stream_window

    def send_message(
        self, sid: int, block: bytes | None, data: bytes, trailers: bytes | None, end: bool
    ) -> None:
        """HEADERS (if `block`), DATA, then trailing HEADERS (if `trailers`), in one write when
        the windows allow; `end` ends the stream after the last of them."""
        n = len(data)
        if (
            sid not in self.blocked
            and not self.paused
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
            self.progress = True
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
        if self.paused:
            self.blocked[sid] = deque(((HEADERS, block, end),))
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
        if self.paused:
            return data
        self.progress = True
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
        q = self.blocked.get(sid)
        if q is None:
            return
        while q:
            kind, payload, end = q[0]
            if kind == RST_STREAM:
                if self.paused:
                    return
                q.popleft()
                self.windows.pop(sid, None)
                self.write(rst(sid, NO_ERROR))
                continue
            if kind == HEADERS:
                if self.paused:
                    return
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
        self.on_drained(sid)

    def _drain_all(self) -> None:
        for sid in list(self.blocked):
            if self.send_window <= 0 or self.paused:
                return
            self._drain(sid)

    def stop_reading(self, sid: int) -> None:
        """RST_STREAM NO_ERROR once what is queued for `sid` went out: the peer may stop
        sending (we answered early); whatever still arrives is dropped and credited."""
        if sid not in self._in:
            return
        del self._in[sid]
        self._owed.pop(sid, None)
        self._resetting(sid)
        q = self.blocked.get(sid)
        if q is not None:
            q.append((RST_STREAM, b"", True))
        else:
            self._write_control(rst(sid, NO_ERROR))

    def reset_stream(self, sid: int, code: int) -> None:
        self._forget(sid)
        self._resetting(sid)
        self._write_control(rst(sid, code))

    def _forget(self, sid: int) -> None:
        self._remote_ended.discard(sid)
        self.windows.pop(sid, None)
        self.blocked.pop(sid, None)
        self._in.pop(sid, None)
        self._owed.pop(sid, None)

    def fail_connection(self, code: int, message: str) -> None:
        """GOAWAY with `code`, then close: abort when the peer is not reading anyway, else
        half-close and drop what still arrives for `LINGER_S` (closing a socket with unread
        input sends a TCP reset, which would discard the GOAWAY at the peer: nginx's
        lingering close)."""
        t = self.transport
        if self.closed or t is None:
            return
        last = struct.pack(">LL", self._peer_sid, code)
        t.write(frame(GOAWAY, 0, 0, last + message.encode()[:256]))
        self.closed = True
        if self.paused:
            t.abort()
            return
        if getattr(t, "can_write_eof", lambda: False)():
            try:
                t.write_eof()
            except OSError:  # the peer is gone already
                t.close()
            else:
                asyncio.get_running_loop().call_later(LINGER_S, t.close)
        else:
            t.close()

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

    def on_drained(self, sid: int) -> None:
        """What waited to be sent on `sid` has all gone out."""
