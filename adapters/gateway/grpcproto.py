"""What both gRPC doors share: the service's method table, the model-name parse, admission.

Kept free of grpcio so the HTTP/2 door never imports it. Status codes are gRPC's numbers
(`Status`); each door maps them to its own wire form.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from adapters.gateway.attempt import Attempt
from adapters.gateway.config import GatewayConfig
from adapters.gateway.metrics import GatewayMetrics
from controlplane.attempts import Unavailable, unavailable
from controlplane.replicas import ModelRouting, Replica

SERVICE = "/inference.GRPCInferenceService/"
ROUTED = frozenset(("ModelInfer", "ModelReady", "ModelMetadata", "ModelConfig", "ModelStatistics"))
STREAM = "ModelStreamInfer"
CLOSED = {
    "RepositoryIndex": "the model repository API is managed by tritonfleet",
    "RepositoryModelLoad": "the model repository API is managed by tritonfleet",
    "RepositoryModelUnload": "the model repository API is managed by tritonfleet",
    "SystemSharedMemoryStatus": "shared memory cannot cross the gateway",
    "SystemSharedMemoryRegister": "shared memory cannot cross the gateway",
    "SystemSharedMemoryUnregister": "shared memory cannot cross the gateway",
    "CudaSharedMemoryStatus": "shared memory cannot cross the gateway",
    "CudaSharedMemoryRegister": "shared memory cannot cross the gateway",
    "CudaSharedMemoryUnregister": "shared memory cannot cross the gateway",
    "TraceSetting": "trace settings of the servers are managed by tritonfleet",
    "LogSettings": "log settings of the servers are managed by tritonfleet",
}
TRUE = b"\x08\x01"  # ServerLiveResponse / ServerReadyResponse {live|ready: true}
# ServerMetadataResponse{name: "tritonfleet", version: "0.1.0",
#                        extensions: ["binary_tensor_data", "statistics"]}
SERVER_METADATA = b"\n\x0btritonfleet\x12\x050.1.0\x1a\x12binary_tensor_data\x1a\nstatistics"


class Status(enum.IntEnum):
    """gRPC status codes (the numbers on the wire, the names grpcio's StatusCode uses)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# A replica that answers these failed (outlier detection counts it); anything else is the
# request's own outcome.
REPLICA_FAILURES = frozenset((Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED))


def replica_outcome(
    status: int, request: Sequence[tuple[bytes, bytes]], reply: Sequence[tuple[bytes, bytes]]
) -> tuple[bool | None, bool]:
    """What a replica's gRPC status says about the replica, and whether another replica may
    help: (True a good reply, the request's own errors included / False a failure, counted
    towards ejection / None neither; retry elsewhere or not).

    - DEADLINE_EXCEEDED is the replica's failure only when the client set no deadline: the
      h2 door forwards the client's `grpc-timeout` to Triton, so a client that sends a short
      one (by mistake or on purpose) would otherwise eject healthy replicas. The gateway's own
      `upstream_timeout_s` still catches a replica that stops answering.
    - UNAVAILABLE is Triton shedding load when its message says so (`attempts.unavailable`):
      a full queue may be retried elsewhere, a queue timeout (the client's `timeout`
      parameter included) is not, and neither ejects the replica."""
    if status not in REPLICA_FAILURES:
        return True, False
    if status == Status.DEADLINE_EXCEEDED:
        return (None if any(k == b"grpc-timeout" for k, _ in request) else False), False
    kind = unavailable(next((v[:512] for k, v in reply if k == b"grpc-message"), b""))
    if kind is Unavailable.FAILURE:
        return False, True
    return None, kind is Unavailable.QUEUE_FULL


class Refusal(Exception):
    """The gateway answers the call itself with this status and message."""

    def __init__(self, code: Status, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class Malformed(ValueError):
    """A request message that is not a well-formed protobuf / gRPC message."""


_MAX_VARINT = 10  # a 64-bit varint never needs more bytes


def field1_string(msg: bytes) -> str:
    """Field 1 (a string) of a serialized protobuf message: the model name; "" when absent.

    The whole top level is checked on the way, in one linear pass: keys and varints of at
    most 10 bytes, lengths within the message, only the wire types proto3 uses (0, 1, 2, 5),
    field 1 a length-delimited UTF-8 string. Field 1 is the *last* occurrence, as protobuf
    parsers (Triton's included) read a repeated scalar, so the model the gateway routes is the
    model Triton runs. Anything else raises `Malformed` (a `ValueError`).
    """
    i, n = 0, len(msg)
    start = end = -1
    while i < n:
        c = msg[i]
        if c < 0x80:  # one-byte key: every field number below 16
            key = c
            i += 1
        else:
            key, i = _varint(msg, i, n)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise Malformed(f"field number 0 at byte {i}")
        if wire == 2:
            c = msg[i] if i < n else 0x80
            if c < 0x80:
                size = c
                i += 1
            else:
                size, i = _varint(msg, i, n)
            if size > n - i:
                raise Malformed(f"field {number}: {size} bytes declared, {n - i} left")
            if number == 1:
                start, end = i, i + size
            i += size
        elif number == 1:
            raise Malformed(f"field 1 has wire type {wire}, not a string")
        elif wire == 0:
            _, i = _varint(msg, i, n)
        elif wire == 1 or wire == 5:
            i += 8 if wire == 1 else 4
            if i > n:
                raise Malformed(f"field {number}: truncated fixed-width value")
        else:
            raise Malformed(f"field {number}: wire type {wire} is not used by this service")
    if start < 0:
        return ""
    try:
        return msg[start:end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Malformed("the model name is not UTF-8") from exc


def _varint(b: bytes, i: int, n: int) -> tuple[int, int]:
    """A varint of at most 10 bytes at `b[i]` (never past `n`): (value, next index)."""
    shift = result = 0
    stop = min(n, i + _MAX_VARINT)
    while i < stop:
        c = b[i]
        i += 1
        result |= (c & 0x7F) << shift
        if not c & 0x80:
            if result >> 64:
                raise Malformed("varint over 64 bits")
            return result, i
        shift += 7
    raise Malformed("truncated varint" if stop == n else "varint longer than 10 bytes")


class MessageReader:
    """Splits one direction of a gRPC stream into its length-prefixed messages.

    Every message's prefix is checked as it arrives (uncompressed, at most `limit` bytes)
    and every complete message's protobuf top level is checked (`field1_string`) before it
    is handed on, so nothing unchecked is forwarded; at most one incomplete message (up to
    `limit` + 5 bytes) is held.
    """

    __slots__ = ("buf", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buf = bytearray()

    def feed(self, chunk: bytes) -> list[bytes]:
        """The messages `chunk` completes, each with its 5-byte prefix; raises `Refusal`."""
        buf = self.buf
        buf += chunk
        out: list[bytes] = []
        pos, n = 0, len(buf)
        while n - pos >= 5:
            if buf[pos] != 0:
                raise Refusal(
                    Status.INVALID_ARGUMENT,
                    "compressed messages are not supported"
                    if buf[pos] == 1
                    else f"bad message flag {buf[pos]}",
                )
            size = int.from_bytes(buf[pos + 1 : pos + 5], "big")
            if size > self.limit:
                raise Refusal(
                    Status.RESOURCE_EXHAUSTED,
                    f"a message of {size} bytes is over the gateway's limit of {self.limit} "
                    "(max_body_bytes)",
                )
            if n - pos - 5 < size:
                break
            msg = bytes(buf[pos : pos + 5 + size])
            try:
                field1_string(msg[5:])
            except Malformed as exc:
                raise Refusal(Status.INVALID_ARGUMENT, f"malformed message: {exc}") from exc
            out.append(msg)
            pos += 5 + size
        if pos:
            del buf[:pos]
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message held."""
        return len(self.buf)


_DENIED = {
    401: (Status.UNAUTHENTICATED, "unauthenticated"),
    404: (Status.NOT_FOUND, "unknown_model"),
    429: (Status.RESOURCE_EXHAUSTED, "rate_limited"),
}


def admit(attempt: Attempt, metrics: GatewayMetrics, token: str | None = None) -> ModelRouting:
    """Admit `attempt` for its model (it must be finished later, which releases it) or refuse.
    `token`: the SHA-256 of the call's bearer token (checked when gateway auth is on)."""
    model = attempt.model
    router = attempt.router
    rt = router.directory.routing(model)
    if router.gate.enabled:
        denied = router.gate.check(model, rt, token)
        if denied is not None:
            code, reason = _DENIED[denied.status]
            metrics.rejections[model, reason] += 1
            raise Refusal(code, denied.message)
    if rt is None:
        metrics.rejections[model, "unknown_model"] += 1
        raise Refusal(
            Status.NOT_FOUND,
            f"model {model!r} is not registered with tritonfleet; register it first",
        )
    if not attempt.admit(rt):
        raise Refusal(
            Status.RESOURCE_EXHAUSTED,
            f"model {model!r} has too many requests in flight at the gateway; retry later, "
            "or raise its admission.max_inflight",
        )
    return rt


def cold(model: str, config: GatewayConfig) -> Refusal:
    """The refusal for a model still without a replica after the cold hold."""
    return Refusal(
        Status.UNAVAILABLE,
        f"model {model!r} has no ready replica yet (loading); retry in {config.retry_after_s}s",
    )


def admin_metadata(name: str, replica: Replica, config: GatewayConfig) -> tuple[str, str] | None:
    """The restricted-API key a call needs upstream (model config only), else None."""
    if name == "ModelConfig" and replica.admin_key:
        return (config.admin_header_grpc, replica.admin_key)
    return None
