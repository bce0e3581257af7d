"""HTTP/1.1 message framing for the gateway's hot path: just enough, in a few C-speed calls.

A general parser calls back into Python once per header; the gateway needs only the request
line, the body length, keep-alive and a handful of headers that change what it does, so it
finds those with `bytes.find` on the lower-cased head and forwards the head verbatim when
nothing in it needs rewriting. Bodies are framed by Content-Length only; a chunked request
gets 411 (every KServe client sends a length), a chunked reply from a server is an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeVar

MAX_HEAD_BYTES = 64 * 1024
_H = TypeVar("_H")

# Headers that never travel upstream as the client sent them (hop-by-hop, or ours to set);
# one regex over the lower-cased head decides whether it can be forwarded verbatim.
_REWRITE = re.compile(
    rb"\r\n(?:connection|expect|upgrade|keep-alive|te|proxy-[a-z-]*|admin-key|transfer-encoding):"
)
_HOP = frozenset(
    (b"connection", b"expect", b"upgrade", b"keep-alive", b"te", b"transfer-encoding",
     b"proxy-connection", b"proxy-authorization", b"admin-key")
)  # fmt: skip


class FramingError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True, frozen=True)
class RequestHead:
    method: bytes
    target: bytes
    length: int
    keep_alive: bool
    expect_continue: bool
    upstream_head: bytes  # request line + headers for Triton, blank line included


def _header_value(lower: bytes, name: bytes) -> bytes | None:
    i = lower.find(name)
    if i < 0:
        return None
    j = lower.find(b"\r\n", i + 2)
    return lower[i + len(name) : j if j >= 0 else None].strip()


def parse_request_head(head: bytes) -> RequestHead:
    """`head` is everything before the blank line (no trailing CRLFCRLF)."""
    line_end = head.find(b"\r\n")
    first = head if line_end < 0 else head[:line_end]
    rest = b"" if line_end < 0 else head[line_end:]  # starts with CRLF
    parts = first.split(b" ")
    if len(parts) != 3 or not parts[1].startswith(b"/"):
        raise FramingError(400, f"malformed request line: {first[:200]!r}")
    method, target, version = parts
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise FramingError(505, f"HTTP version {version[:20]!r} is not supported; use HTTP/1.1")
    lower = rest.lower()
    length = 0
    cl = _header_value(lower, b"\r\ncontent-length:")
    if cl is not None:
        if not cl.isdigit():
            raise FramingError(400, f"invalid Content-Length {cl[:40]!r}")
        length = int(cl)
    rewrite = version != b"HTTP/1.1" or _REWRITE.search(lower) is not None
    keep_alive = version == b"HTTP/1.1"
    expect = False
    if rewrite:
        if b"\r\ntransfer-encoding:" in lower:
            raise FramingError(411, "chunked request bodies are not supported; send Content-Length")
        conn = _header_value(lower, b"\r\nconnection:")
        if conn is not None:
            if b"close" in conn:
                keep_alive = False
            elif b"keep-alive" in conn:
                keep_alive = True
        ex = _header_value(lower, b"\r\nexpect:")
        expect = ex is not None and ex == b"100-continue"
        kept = [
            line
            for line in rest.split(b"\r\n")[1:]
            if line and line.split(b":", 1)[0].strip().lower() not in _HOP
        ]
        upstream = b"%s %s HTTP/1.1\r\n%s\r\n" % (
            method,
            target,
            b"".join(line + b"\r\n" for line in kept),
        )
    else:
        upstream = head + b"\r\n\r\n"
    return RequestHead(method, target, length, keep_alive, expect, upstream)


class HeadCache(dict[bytes, _H]):
    """Parsed heads by their exact bytes: a client sends the same head again and again."""

    limit = 4096

    def remember(self, raw: bytes, head: _H) -> None:
        if len(self) >= self.limit:
            self.clear()
        self[raw] = head


@dataclass(slots=True, frozen=True)
class ResponseHead:
    status: int
    length: int
    keep_alive: bool


def parse_response_head(head: bytes) -> ResponseHead:
    """A Triton reply's head (no trailing CRLFCRLF); raises FramingError when it cannot be framed."""
    try:
        status = int(head[9:12])
    except ValueError as exc:
        raise FramingError(502, f"malformed status line from the server: {head[:60]!r}") from exc
    lower = head.lower()
    cl = _header_value(lower, b"\r\ncontent-length:")
    if cl is None or not cl.isdigit():
        if 100 <= status < 200 or status in (204, 304):
            return ResponseHead(status, 0, True)
        raise FramingError(
            502, "the server's reply has no Content-Length (chunked replies are not proxied)"
        )
    conn = _header_value(lower, b"\r\nconnection:")
    keep = not head.startswith(b"HTTP/1.0") and not (conn is not None and b"close" in conn)
    return ResponseHead(status, int(cl), keep)
