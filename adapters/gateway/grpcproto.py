"""What both gRPC doors share: the service's method table, the model-name parse, admission.

Kept free of grpcio so the HTTP/2 door never imports it. Status codes are gRPC's numbers
(`Status`); each door maps them to its own wire form.
"""

from __future__ import annotations

import enum

from adapters.gateway.config import GatewayConfig
from adapters.gateway.metrics import GatewayMetrics
from adapters.gateway.router import Router
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


class Refusal(Exception):
    """The gateway answers the call itself with this status and message."""

    def __init__(self, code: Status, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def field1_string(msg: bytes) -> str:
    """Field 1 (a string) of a serialized protobuf message: the model name; "" when absent."""
    i, n = 0, len(msg)
    while i < n:
        key, i = _varint(msg, i)
        number, wire = key >> 3, key & 7
        if wire == 2:
            size, i = _varint(msg, i)
            if number == 1:
                return msg[i : i + size].decode("utf-8", errors="replace")
            i += size
        elif wire == 0:
            _, i = _varint(msg, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            return ""
    return ""


def _varint(b: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(b):
            raise ValueError("truncated varint")
        c = b[i]
        i += 1
        result |= (c & 0x7F) << shift
        if not c & 0x80:
            return result, i
        shift += 7


def admit(router: Router, metrics: GatewayMetrics, model: str) -> ModelRouting:
    """Admit one call for `model` (the caller must `router.release(model)` later) or refuse."""
    rt = router.directory.routing(model)
    if rt is None:
        metrics.rejections[model, "unknown_model"] += 1
        raise Refusal(
            Status.NOT_FOUND,
            f"model {model!r} is not registered with tritonfleet; register it first",
        )
    if not router.admit(model, rt):
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
