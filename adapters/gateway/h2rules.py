"""RFC 9113 §8 rules for an HTTP/2 request's header fields: what makes a request malformed.

Pure functions over decoded header lists, run once per distinct header block (the decoder
caches blocks with their verdict, so a client repeating its block pays nothing again). A
malformed request is a stream error of type PROTOCOL_ERROR (§8.1.1): the stream is reset,
the connection and its other streams go on.
"""

from __future__ import annotations

from collections.abc import Sequence

_REQUEST_PSEUDO = frozenset((b":method", b":scheme", b":path", b":authority"))
# §8.2.2: connection-specific fields have no place in HTTP/2
_CONNECTION_SPECIFIC = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)
_UPPER = frozenset(range(0x41, 0x5B))
# §8.2.1: a name is lowercase token characters; a value has no NUL, CR or LF and no
# leading or trailing whitespace
_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")
_BAD_IN_VALUE = (b"\x00", b"\r", b"\n")


def _field_error(name: bytes, value: bytes) -> str | None:
    body = name[1:] if name[:1] == b":" else name
    if not body or not _TCHAR.issuperset(body):
        if any(c in _UPPER for c in body):
            return f"header name {name[:40]!r} has uppercase characters"
        return f"header name {name[:40]!r} is not a token"
    if any(b in value for b in _BAD_IN_VALUE):
        return f"header {name[:40]!r} has NUL, CR or LF in its value"
    if value[:1] in (b" ", b"\t") or value[-1:] in (b" ", b"\t"):
        return f"header {name[:40]!r} has whitespace around its value"
    return None


def request_error(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """Why `headers` are not a well-formed HTTP/2 request header section, or None."""
    seen: set[bytes] = set()
    regular = False
    for name, value in headers:
        err = _field_error(name, value)
        if err is not None:
            return err
        if name[:1] == b":":
            if regular:
                return f"pseudo-header {name!r} after a regular header"
            if name not in _REQUEST_PSEUDO:
                return f"pseudo-header {name[:40]!r} is not a request pseudo-header"
            if name in seen:
                return f"pseudo-header {name!r} appears twice"
            if name == b":path" and not value:
                return "empty :path"
            seen.add(name)
        else:
            regular = True
            if name in _CONNECTION_SPECIFIC:
                return f"connection-specific header {name!r}"
            if name == b"te" and value != b"trailers":
                return "TE other than 'trailers'"
    if b":method" not in seen:
        return "no :method"
    if b":scheme" not in seen or b":path" not in seen:
        return "no :scheme or :path"
    return None


def trailers_error(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """Why `headers` are not a well-formed trailer section (no pseudo-headers), or None."""
    for name, value in headers:
        if name[:1] == b":":
            return f"pseudo-header {name[:40]!r} in trailers"
        err = _field_error(name, value)
        if err is not None:
            return err
    return None
