"""HTTP/1.1 message framing for the gateway's hot path: strict once, then a dict lookup.

A request head is validated by llhttp (through `httptools`, strict: no lenient flags) the first
time its exact bytes are seen: obs-fold, bare CR or LF, whitespace before a colon, bytes outside
the token / field-value grammar, duplicate or list-valued Content-Length, Transfer-Encoding
with Content-Length and unknown transfer codings are all refused there (RFC 9112). A few
checks of the gateway's own follow (request-line and head sizes, origin-form target, exactly
one Host on HTTP/1.1 (RFC 9112 §3.2), no transfer coding at all, no Connection option naming
Content-Length or Host). Hop-by-hop headers, and every header the Connection field names, are
dropped from what goes upstream (RFC 9110 §7.6.1). Only a head that passed all of them is cached, keyed by its
exact bytes, so a client that sends the same head again and again pays one lookup.

Bodies are framed by Content-Length only; a chunked request gets 411 (every KServe client
sends a length), a chunked reply from a server is an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeVar

import httptools

from adapters.gateway.tenancy import token_hash

MAX_HEAD_BYTES = 64 * 1024  # request line + headers (431 past it)
MAX_REQUEST_LINE_BYTES = 8 * 1024  # 414 past it, as nginx's default large header buffer
MAX_HEADERS = 100  # header lines per request (431 past it)
_H = TypeVar("_H")
UPSTREAM_HOST = b"Host: tritonfleet-gateway"  # for HTTP/1.0 requests that came without one

_HOP = frozenset(
    (b"connection", b"expect", b"upgrade", b"keep-alive", b"te", b"trailer",
     b"transfer-encoding", b"proxy-connection", b"proxy-authenticate", b"proxy-authorization",
     b"admin-key")
)  # fmt: skip
# Headers that never travel upstream as the client sent them: the hop-by-hop set (RFC 9110
# §7.6.1, as nginx and Envoy strip it), every header the client's Connection field names,
# and ours to set. A head without any of them is forwarded verbatim.
_REWRITE = re.compile(
    rb"\r\n(?:connection|expect|upgrade|keep-alive|te|trailer|proxy-[a-z-]*|admin-key"
    rb"|transfer-encoding):"
)
# Connection options that only say what to do with the connection, and names a client may
# not make hop-by-hop: dropping them would change how the request is framed or routed.
_CONNECTION_ONLY = frozenset((b"close", b"keep-alive", b""))
_END_TO_END = frozenset((b"content-length", b"host"))


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
    token_sha256: str | None = None  # of the bearer token ("" malformed, None absent)


def _header_value(lower: bytes, name: bytes) -> bytes | None:
    i = lower.find(name)
    if i < 0:
        return None
    j = lower.find(b"\r\n", i + 2)
    return lower[i + len(name) : j if j >= 0 else None].strip()


class _Headers:
    """llhttp callbacks: the header fields of one head, as llhttp split them."""

    __slots__ = ("complete", "fields")

    def __init__(self) -> None:
        self.fields: list[tuple[bytes, bytes]] = []
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.complete = True


def _llhttp(head: bytes) -> list[tuple[bytes, bytes]]:
    """The head's fields (names lower-cased); FramingError(400) if llhttp refuses the head."""
    cb = _Headers()
    parser = httptools.HttpRequestParser(cb)
    try:
        parser.feed_data(head + b"\r\n\r\n")
    except httptools.HttpParserUpgrade:
        pass  # CONNECT or Upgrade: the head itself parsed; Upgrade is never forwarded
    except httptools.HttpParserError as exc:
        raise FramingError(400, f"malformed request head: {exc}") from exc
    if not cb.complete:  # cannot happen for a head that ends in CRLFCRLF; never forward it
        raise FramingError(400, "malformed request head: incomplete")
    return cb.fields


def check_partial_head(data: bytes) -> None:
    """Refuse a head still arriving as soon as it cannot become valid (bare LF, sizes)."""
    if len(data) > MAX_HEAD_BYTES:
        raise FramingError(431, f"request head over {MAX_HEAD_BYTES} bytes")
    line_end = data.find(b"\r\n")
    if (line_end < 0 and len(data) > MAX_REQUEST_LINE_BYTES) or line_end > MAX_REQUEST_LINE_BYTES:
        raise FramingError(414, f"request line over {MAX_REQUEST_LINE_BYTES} bytes")
    if data.count(b"\n") != data.count(b"\r\n"):
        raise FramingError(400, "malformed request head: bare LF (lines end with CRLF)")


def parse_request_head(head: bytes) -> RequestHead:
    """`head` is everything before the blank line (no trailing CRLFCRLF)."""
    line_end = head.find(b"\r\n")
    first = head if line_end < 0 else head[:line_end]
    rest = b"" if line_end < 0 else head[line_end:]  # starts with CRLF
    if len(first) > MAX_REQUEST_LINE_BYTES:
        raise FramingError(414, f"request line over {MAX_REQUEST_LINE_BYTES} bytes")
    if len(head) > MAX_HEAD_BYTES:
        raise FramingError(431, f"request head over {MAX_HEAD_BYTES} bytes")
    parts = first.split(b" ")
    if len(parts) != 3 or not parts[1].startswith(b"/"):
        raise FramingError(400, f"malformed request line: {first[:200]!r}")
    method, target, version = parts
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise FramingError(505, f"HTTP version {version[:20]!r} is not supported; use HTTP/1.1")
    fields = _llhttp(head)
    if len(fields) > MAX_HEADERS:
        raise FramingError(431, f"more than {MAX_HEADERS} header fields")
    length = 0
    hosts = 0
    expect = False
    authorization: bytes | None = None
    tokens: set[bytes] = set()  # of every Connection field
    for name, value in fields:
        if name == b"content-length":  # llhttp refused duplicates, lists and non-digits
            length = int(value)
        elif name == b"transfer-encoding":
            if value.strip().lower() == b"chunked":
                raise FramingError(
                    411, "chunked request bodies are not supported; send Content-Length"
                )
            raise FramingError(400, f"transfer coding {value[:40]!r} is not supported")
        elif name == b"host":
            hosts += 1
        elif name == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
        elif name == b"expect":
            expect = value.strip().lower() == b"100-continue"
        elif name == b"authorization":
            # Several: malformed, a 401 (tenancy.only_authorization's rule, kept inline here).
            authorization = value if authorization is None else b""
    if hosts > 1:
        raise FramingError(400, "more than one Host header")
    if hosts == 0 and version == b"HTTP/1.1":
        raise FramingError(400, "an HTTP/1.1 request needs a Host header (RFC 9112 section 3.2)")
    named = tokens - _CONNECTION_ONLY  # header names the client made hop-by-hop
    if named & _END_TO_END:
        raise FramingError(
            400,
            f"Connection names {b', '.join(sorted(named & _END_TO_END)).decode()}, which the "
            "request cannot be forwarded without; remove it from Connection",
        )
    keep_alive = b"close" not in tokens and (version == b"HTTP/1.1" or b"keep-alive" in tokens)
    lines = rest.split(b"\r\n")[1:]
    if len(lines) != len(fields):
        # One raw line per field llhttp reported, or the head is not what it looks like (an
        # empty line inside it, say): never forward what cannot be mapped line for line.
        raise FramingError(400, "malformed request head: header lines and fields disagree")
    if version != b"HTTP/1.1" or _REWRITE.search(rest.lower()) is not None:
        drop = _HOP | named if named else _HOP
        kept = [line for line, (name, _) in zip(lines, fields, strict=True) if name not in drop]
        if not hosts:  # HTTP/1.0 may omit Host; what goes upstream is HTTP/1.1, which may not
            kept.insert(0, UPSTREAM_HOST)
        upstream = b"%s %s HTTP/1.1\r\n%s\r\n" % (
            method,
            target,
            b"".join(line + b"\r\n" for line in kept),
        )
    else:
        upstream = head + b"\r\n\r\n"
    # Hashed here, once per distinct head: the head cache makes it once per client and token.
    return RequestHead(
        method, target, length, keep_alive, expect, upstream, token_hash(authorization)
    )


class HeadCache(dict[bytes, _H]):
    """Parsed (and validated) heads by their exact bytes: a client sends the same head again
    and again. Bounded in entries and in key bytes (values are about as large as their keys);
    full, it starts over, so a client sending endless distinct heads only costs misses."""

    limit = 4096
    limit_bytes = 4 << 20
    max_key_bytes = 8 * 1024  # larger heads are parsed every time, never kept

    def __init__(self) -> None:
        super().__init__()
        self.nbytes = 0

    def remember(self, raw: bytes, head: _H) -> None:
        n = len(raw)
        if n > self.max_key_bytes:
            return
        if len(self) >= self.limit or self.nbytes + n > self.limit_bytes:
            self.clear()
            self.nbytes = 0
        if raw not in self:
            self.nbytes += n
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
