"""The inference path to Triton: model descriptions and pre-built inference calls.

Both protocols describe the model through tritonclient's asyncio clients. For the requests
themselves, the hot path does the least possible work per request:

* HTTP: tritonclient's own `generate_request_body` builds each body once (binary tensor data
  by default, the exact bytes `tritonclient.http.aio` would send); each request is then one
  aiohttp POST (aiohttp is what `tritonclient.http.aio` runs on) with a shared session and
  keep-alive connections.
* gRPC: each `ModelInferRequest` protobuf is built once and sent through the KServe v2 stub
  that `tritonclient.grpc.aio` uses, on one shared `grpc.aio` channel.

`infer()` returns None on success or an error kind: `http_<status>`, `grpc_<CODE>`,
`timeout`, `connection` or `client_error`; it never raises for a failed request.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from yarl import URL

from loadgen import leanhttp
from loadgen.errors import TargetError
from loadgen.inputs import ModelSignature


class Protocol_(enum.StrEnum):
    HTTP = "http"
    GRPC = "grpc"


class ClientLibrary(enum.StrEnum):
    LEAN = "lean"  # HTTP: loadgen.leanhttp (raw asyncio + httptools); gRPC: as TRITONCLIENT
    TRITONCLIENT = "tritonclient"  # the clients tritonclient's asyncio API runs on


@dataclass(frozen=True)
class Target:
    url: str  # host:port (a scheme is stripped)
    protocol: Protocol_
    timeout_s: float
    max_connections: int
    binary_data: bool = True
    client: ClientLibrary = ClientLibrary.LEAN

    @property
    def hostport(self) -> str:
        return self.url.split("://", 1)[-1].rstrip("/")


Callback = Callable[[str | None, bytes], None]


class Transport(Protocol):
    async def describe(self, model: str, version: str) -> ModelSignature: ...

    def prepare(self, sig: ModelSignature, sets: Sequence[dict[str, np.ndarray]]) -> list[Any]: ...

    async def infer(self, prepared: Any) -> str | None: ...

    def submit(self, prepared: Any, cb: Callback) -> None:
        """Start one request; `cb(kind, detail)` gets what `infer` would return (and the error
        detail, if any) when it ends. Never raises for a failed request."""
        ...

    async def check(self, prepared: Any) -> str | None:
        """Send one request before the run; the server's error message if it fails."""
        ...

    async def close(self) -> None: ...


def open_transport(target: Target) -> Transport:
    if target.protocol is Protocol_.GRPC:
        return GrpcTransport(target)
    if target.client is ClientLibrary.TRITONCLIENT:
        return HttpTransport(target)
    return LeanHttpTransport(target)


def infer_bodies(
    sig: ModelSignature, sets: Sequence[dict[str, np.ndarray]], *, binary: bool
) -> list[tuple[bytes, int | None]]:
    """KServe v2 infer bodies, one per input set: `(body, json_header_size)`; the size is
    None for a pure JSON body (no binary tensors)."""
    import tritonclient.http as httpclient
    from tritonclient.utils import np_to_triton_dtype

    outputs = [httpclient.InferRequestedOutput(o.name, binary_data=binary) for o in sig.outputs]
    out = []
    for tensors in sets:
        inputs = []
        for spec in sig.inputs:
            arr = tensors[spec.name]
            dt = spec.datatype if spec.datatype == "BYTES" else np_to_triton_dtype(arr.dtype)
            inp = httpclient.InferInput(spec.name, list(arr.shape), dt)
            inp.set_data_from_numpy(arr, binary_data=binary)
            inputs.append(inp)
        body, json_size = httpclient.InferenceServerClient.generate_request_body(
            inputs, outputs=outputs
        )
        out.append((bytes(body), json_size))
    return out


class _TaskSubmit:
    """`submit` for transports whose requests are coroutines: one task per request."""

    _tasks: set[asyncio.Task[Any]]

    async def infer(self, prepared: Any) -> str | None:
        raise NotImplementedError

    def submit(self, prepared: Any, cb: Callback) -> None:
        tasks = self.__dict__.setdefault("_tasks", set())
        task = asyncio.get_running_loop().create_task(self.infer(prepared))
        tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            tasks.discard(t)
            if t.cancelled():
                cb("client_error", b"cancelled")
            elif (exc := t.exception()) is not None:
                cb("client_error", repr(exc).encode())
            else:
                cb(t.result(), b"")

        task.add_done_callback(done)


class HttpTransport(_TaskSubmit):
    def __init__(self, target: Target) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        self._target = target
        self._base = f"http://{target.hostport}"
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=target.timeout_s)

    def _sess(self) -> Any:
        if self._session is None:
            aiohttp = self._aiohttp
            conn = aiohttp.TCPConnector(
                limit=self._target.max_connections, ttl_dns_cache=None, use_dns_cache=True
            )
            self._session = aiohttp.ClientSession(
                connector=conn,
                timeout=self._timeout,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
                auto_decompress=False,
            )
        return self._session

    async def describe(self, model: str, version: str) -> ModelSignature:
        import tritonclient.http.aio as httpaio
        from tritonclient.utils import InferenceServerException

        client = httpaio.InferenceServerClient(self._target.hostport, conn_timeout=10.0)
        try:
            meta = await client.get_model_metadata(model, version)
            cfg = await client.get_model_config(model, version)
        except InferenceServerException as exc:
            raise TargetError(
                f"model {model!r} on http://{self._target.hostport}: {exc.message()}; "
                "check --model and that the model is loaded (GET /v2/repository/index)"
            ) from exc
        except (TimeoutError, OSError, self._aiohttp.ClientError) as exc:
            raise TargetError(
                f"cannot reach Triton at http://{self._target.hostport} ({exc}); check --url"
            ) from exc
        finally:
            await client.close()
        return ModelSignature.from_metadata(meta, cfg, version)

    def prepare(self, sig: ModelSignature, sets: Sequence[dict[str, np.ndarray]]) -> list[Any]:
        url = URL(self._base + LeanHttpTransport.request_path(sig))  # parsed once
        prepared = []
        for body, json_size in infer_bodies(sig, sets, binary=self._target.binary_data):
            headers = {"Content-Type": "application/octet-stream"}
            if json_size is not None:
                headers["Inference-Header-Content-Length"] = str(json_size)
            else:
                headers["Content-Type"] = "application/json"
            prepared.append((url, body, headers))
        return prepared

    async def check(self, prepared: Any) -> str | None:
        url, body, headers = prepared
        try:
            async with self._sess().post(url, data=body, headers=headers) as resp:
                text = (await resp.read()).decode(errors="replace")
                return None if resp.status == 200 else f"HTTP {resp.status}: {text[:500]}"
        except (TimeoutError, self._aiohttp.ClientError) as exc:
            return f"{type(exc).__name__}: {exc}"

    async def infer(self, prepared: Any) -> str | None:
        url, body, headers = prepared
        try:
            async with self._sess().post(url, data=body, headers=headers) as resp:
                await resp.read()
                return None if resp.status == 200 else f"http_{resp.status}"
        except TimeoutError:
            return "timeout"
        except self._aiohttp.ClientConnectionError:
            return "connection"
        except self._aiohttp.ClientError:
            return "client_error"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class GrpcTransport(_TaskSubmit):
    def __init__(self, target: Target) -> None:
        import grpc

        self._grpc = grpc
        self._target = target
        self._channel: Any = None
        self._stub: Any = None

    def _get_stub(self) -> Any:
        if self._stub is None:
            from tritonclient.grpc import service_pb2_grpc

            self._channel = self._grpc.aio.insecure_channel(
                self._target.hostport,
                options=[
                    ("grpc.max_send_message_length", 2**31 - 1),
                    ("grpc.max_receive_message_length", 2**31 - 1),
                ],
            )
            self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        return self._stub

    async def describe(self, model: str, version: str) -> ModelSignature:
        import tritonclient.grpc.aio as grpcaio
        from tritonclient.utils import InferenceServerException

        client = grpcaio.InferenceServerClient(self._target.hostport)
        try:
            meta = await client.get_model_metadata(model, version, as_json=True)
            cfg = await client.get_model_config(model, version, as_json=True)
        except InferenceServerException as exc:
            raise TargetError(
                f"model {model!r} on grpc {self._target.hostport}: {exc.message()}; "
                "check --model, --url and that the model is loaded"
            ) from exc
        finally:
            await client.close()
        return ModelSignature.from_metadata(meta, cfg, version)

    def prepare(self, sig: ModelSignature, sets: Sequence[dict[str, np.ndarray]]) -> list[Any]:
        from tritonclient.grpc import service_pb2
        from tritonclient.utils import serialize_byte_tensor

        prepared = []
        for tensors in sets:
            req = service_pb2.ModelInferRequest(model_name=sig.name, model_version=sig.version)
            for spec in sig.inputs:
                arr = tensors[spec.name]
                inp = req.inputs.add()
                inp.name = spec.name
                inp.datatype = spec.datatype
                inp.shape.extend(arr.shape)
                if spec.datatype == "BYTES":
                    serialized = serialize_byte_tensor(arr)  # a 0-d object array holding bytes
                    req.raw_input_contents.append(serialized.item() if serialized.size else b"")
                else:
                    req.raw_input_contents.append(np.ascontiguousarray(arr).tobytes())
            for out in sig.outputs:
                req.outputs.add().name = out.name
            prepared.append(req)
        return prepared

    async def check(self, prepared: Any) -> str | None:
        try:
            await self._get_stub().ModelInfer(prepared, timeout=self._target.timeout_s)
            return None
        except self._grpc.aio.AioRpcError as exc:
            return f"{exc.code().name}: {exc.details()}"

    async def infer(self, prepared: Any) -> str | None:
        grpc = self._grpc
        try:
            await self._get_stub().ModelInfer(prepared, timeout=self._target.timeout_s)
            return None
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                return "timeout"
            return f"grpc_{code.name}"
        except TimeoutError:
            return "timeout"

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None


class LeanHttpTransport(HttpTransport):
    """HTTP through `loadgen.leanhttp`: each request is one pre-serialised `bytes` written to a
    persistent connection; no per-request task, header dict or timeout object.

    Bodies are the bytes tritonclient would send (`generate_request_body`, binary tensor data
    by default); model descriptions still go through tritonclient (`HttpTransport.describe`).
    """

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        self._pool = leanhttp.Pool(
            target.hostport, limit=target.max_connections, timeout_s=target.timeout_s
        )

    @staticmethod
    def request_path(sig: ModelSignature) -> str:
        path = f"/v2/models/{sig.name}"
        if sig.version:
            path += f"/versions/{sig.version}"
        return path + "/infer"

    def prepare(self, sig: ModelSignature, sets: Sequence[dict[str, np.ndarray]]) -> list[Any]:
        path = self.request_path(sig)
        prepared = []
        for body, json_size in infer_bodies(sig, sets, binary=self._target.binary_data):
            prepared.append(
                leanhttp.build_request(
                    self._target.hostport, path, body, json_header_size=json_size
                )
            )
        return prepared

    async def check(self, prepared: Any) -> str | None:
        kind, detail = await self._pool.request(prepared)
        if kind is None:
            return None
        text = detail.decode(errors="replace")[:500]
        if kind.startswith("http_"):
            return f"HTTP {kind[5:]}: {text}"
        return f"{kind}: {text}"

    async def infer(self, prepared: Any) -> str | None:
        kind, _ = await self._pool.request(prepared)
        return kind

    def submit(self, prepared: Any, cb: Callback) -> None:
        self._pool.submit(prepared, cb)

    async def close(self) -> None:
        await self._pool.close()
        await super().close()
