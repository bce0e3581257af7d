"""The KServe v2 gRPC front door: a generic handler that forwards serialized messages as bytes.

No message is parsed except the few bytes that hold the model name (field 1 of every
model-scoped request); requests and replies cross as the bytes the client and Triton sent,
over one channel per replica. Server live/ready/metadata are answered here; the repository,
shared-memory, trace and log APIs are refused with PERMISSION_DENIED; ModelConfig carries the
control plane's restricted-API key upstream.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from adapters.gateway.attempt import Attempt
from adapters.gateway.config import GatewayConfig
from adapters.gateway.grpcproto import (
    CLOSED,
    ROUTED,
    SERVER_METADATA,
    SERVICE,
    STREAM,
    TRUE,
    Refusal,
    admin_metadata,
    admit,
    cold,
    field1_string,
    replica_outcome,
)
from adapters.gateway.metrics import GatewayMetrics
from adapters.gateway.router import Router
from adapters.gateway.tenancy import only_authorization, token_hash
from controlplane.replicas import Replica

log = logging.getLogger(__name__)

_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
]
__all__ = ["GrpcDoor", "field1_string"]


def _outcome(exc: aio.AioRpcError) -> tuple[bool | None, bool]:
    """`grpcproto.replica_outcome` for a grpcio error. This door sends its own deadline
    (`upstream_timeout_s`), never the client's, so DEADLINE_EXCEEDED is the replica's."""
    message = (exc.details() or "").encode("utf-8", "replace")
    return replica_outcome(exc.code().value[0], (), ((b"grpc-message", message),))


class _Call(Attempt):
    """One grpcio call's lifecycle; gRPC deadlines time it out, not the router's timeout watch."""

    __slots__ = ()
    protocol = "grpc"
    cancel_code = "CANCELLED"

    def expire(self) -> None:
        pass


class GrpcDoor(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc ships no types
    def __init__(self, router: Router, metrics: GatewayMetrics, config: GatewayConfig) -> None:
        self.router = router
        self.metrics = metrics
        self.config = config
        self.channels: dict[str, aio.Channel] = {}
        self.calls: dict[tuple[str, str], Any] = {}
        self.server: aio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        self.server = aio.server(options=_CHANNEL_OPTIONS)
        self.server.add_generic_rpc_handlers((self,))
        bound: int = self.server.add_insecure_port(f"{host}:{port}")
        await self.server.start()
        return bound

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=1.0)
        for ch in self.channels.values():
            await ch.close()

    # --- grpc.GenericRpcHandler --------------------------------------------------------
    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method
        if not method.startswith(SERVICE):
            return None
        name = method[len(SERVICE) :]
        if name in ROUTED:
            return grpc.unary_unary_rpc_method_handler(self._unary(method, name))
        if name == STREAM:
            return grpc.stream_stream_rpc_method_handler(self._stream(method))
        if name in ("ServerLive", "ServerReady"):
            return grpc.unary_unary_rpc_method_handler(self._const(TRUE))
        if name == "ServerMetadata":
            return grpc.unary_unary_rpc_method_handler(self._const(SERVER_METADATA))
        if name in CLOSED:
            return grpc.unary_unary_rpc_method_handler(self._closed(name))
        return None

    @staticmethod
    def _const(reply: bytes) -> Callable[[bytes, aio.ServicerContext], Awaitable[bytes]]:
        async def handler(request: bytes, context: aio.ServicerContext) -> bytes:
            return reply

        return handler

    @staticmethod
    def _closed(name: str) -> Callable[[bytes, aio.ServicerContext], Awaitable[bytes]]:
        async def handler(request: bytes, context: aio.ServicerContext) -> bytes:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{name}: {CLOSED[name]}")
            raise AssertionError("unreachable")

        return handler

    # --- routing -----------------------------------------------------------------------
    def _call(self, replica: Replica, method: str, stream: bool = False) -> Any:
        key = (replica.grpc_url, method)
        c = self.calls.get(key)
        if c is None:
            ch = self.channels.get(replica.grpc_url)
            if ch is None:
                ch = self.channels[replica.grpc_url] = aio.insecure_channel(
                    replica.grpc_url, options=_CHANNEL_OPTIONS
                )
            c = self.calls[key] = ch.stream_stream(method) if stream else ch.unary_unary(method)
        return c

    async def _admit(self, call: _Call, context: aio.ServicerContext) -> list[Replica]:
        """Admit `call` and find its replicas (waiting for a cold model); raises `Refusal`."""
        token = None
        if self.router.gate.enabled:
            auth = only_authorization(
                v
                for k, v in context.invocation_metadata() or ()
                if k == "authorization" and isinstance(v, str | bytes)
            )
            token = token_hash(auth)
        admit(call, self.metrics, token)
        replicas = list(self.router.directory.replicas(call.model))
        if not replicas:
            replicas = list(await self.router.hold(call.model))
            if not replicas:
                raise cold(call.model, self.config)
        return replicas

    def _metadata_for(self, name: str, replica: Replica) -> tuple[tuple[str, str], ...] | None:
        md = admin_metadata(name, replica, self.config)
        return (md,) if md else None

    def _unary(
        self, method: str, name: str
    ) -> Callable[[bytes, aio.ServicerContext], Awaitable[bytes]]:
        router = self.router

        async def handler(request: bytes, context: aio.ServicerContext) -> bytes:
            try:
                model = field1_string(request)
            except ValueError as exc:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"{name}: malformed request: {exc}"
                )
            call = _Call(router, model)
            # Whatever ends the handler (a reply, an abort, the client's cancel raising
            # CancelledError here), the call finishes exactly once: `finally` cancels it
            # unless an answer finished it first.
            try:
                try:
                    replicas = await self._admit(call, context)
                except Refusal as r:
                    call.finish(r.code.name)
                    await context.abort(grpc.StatusCode[r.code.name], r.details)
                replica = call.send(replicas)
                while True:
                    try:
                        reply = await self._call(replica, method)(
                            request,
                            timeout=self.config.upstream_timeout_s,
                            metadata=self._metadata_for(name, replica),
                        )
                    except aio.AioRpcError as exc:
                        code = exc.code()
                        ok, retryable = _outcome(exc)
                        call.outcome(ok)
                        if retryable:
                            retried = call.retry("unavailable", replicas)
                            if retried is not None:
                                replica = retried
                                continue
                        call.finish(code.name)
                        await context.abort(code, exc.details() or code.name)
                    call.outcome(True)
                    call.finish("OK")
                    return bytes(reply)
            finally:
                call.cancel()

        return handler

    def _stream(
        self, method: str
    ) -> Callable[[AsyncIterator[bytes], aio.ServicerContext], AsyncIterator[bytes]]:
        router = self.router

        async def handler(
            requests: AsyncIterator[bytes], context: aio.ServicerContext
        ) -> AsyncIterator[bytes]:
            try:
                first = await anext(requests)
            except StopAsyncIteration:
                return
            try:
                model = field1_string(first)
            except ValueError as exc:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"ModelStreamInfer: malformed request: {exc}"
                )
            call = _Call(router, model)
            try:
                try:
                    replicas = await self._admit(call, context)
                except Refusal as r:
                    call.finish(r.code.name)
                    await context.abort(grpc.StatusCode[r.code.name], r.details)
                # One stream stays on one replica: sequences and decoupled models need that.
                replica = call.send(replicas)

                async def upstream() -> AsyncIterator[bytes]:
                    yield first
                    async for r in requests:
                        yield r

                try:
                    stream = self._call(replica, method, stream=True)(upstream(), timeout=None)
                    async for reply in stream:
                        yield reply
                except aio.AioRpcError as exc:
                    code = exc.code()
                    call.finish(code.name, _outcome(exc)[0])
                    await context.abort(code, exc.details() or code.name)
                call.finish("OK", True)
            finally:
                call.cancel()

        return handler
