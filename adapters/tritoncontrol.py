"""`TritonControl` over Triton's gRPC repository API and HTTP statistics.

Loads carry the rendered config as a JSON override and the model's files as `file:` overrides,
so no server needs a shared disk. Each server gets one long-lived gRPC channel and one HTTP
client. Errors are mapped once, here: Triton's refusal → `ModelLoadFailed` (permanent, with
Triton's message), an unreachable server → `ServerUnavailable` (retryable).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
import httpx
import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from controlplane.errors import ModelLoadFailed, ServerUnavailable
from controlplane.fleet import Server
from controlplane.triton import LoadedModel

_UNAVAILABLE = {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED"}


def _grpc_headers(server: Server) -> dict[str, str] | None:
    if not server.admin_key:
        return None
    # Triton prefixes the restricted-protocol key for gRPC metadata.
    return {f"triton-grpc-protocol-{server.admin_header}": server.admin_key}


def _http_headers(server: Server) -> dict[str, str]:
    return {server.admin_header: server.admin_key} if server.admin_key else {}


class GrpcTritonControl:
    def __init__(self, load_timeout_s: float = 300.0, call_timeout_s: float = 5.0) -> None:
        self._load_timeout_s = load_timeout_s
        self._call_timeout_s = call_timeout_s
        self._grpc: dict[str, grpcaio.InferenceServerClient] = {}
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(call_timeout_s))

    def _client(self, server: Server) -> grpcaio.InferenceServerClient:
        client = self._grpc.get(server.grpc_url)
        if client is None:
            client = grpcaio.InferenceServerClient(server.grpc_url)
            self._grpc[server.grpc_url] = client
        return client

    @staticmethod
    def _is_unavailable(exc: InferenceServerException) -> bool:
        return str(exc.status()) in _UNAVAILABLE

    @contextlib.asynccontextmanager
    async def _repository_call(self, server: Server, model: str, what: str) -> AsyncIterator[None]:
        """Map one repository call's failures: refused → ModelLoadFailed, unreachable →
        ServerUnavailable (retryable)."""
        try:
            yield
        except InferenceServerException as exc:
            if self._is_unavailable(exc):
                raise ServerUnavailable(f"{server.id}: {exc.message()}") from exc
            raise ModelLoadFailed(model, server.id, f"{what}{exc.message() or exc}") from exc
        except (TimeoutError, grpc.RpcError, OSError) as exc:
            raise ServerUnavailable(f"{server.id}: {exc}") from exc

    async def load(
        self, server: Server, model: str, config_json: str, files: Mapping[str, bytes]
    ) -> None:
        overrides = {f"file:{path}": data for path, data in files.items()}
        async with self._repository_call(server, model, ""):
            await self._client(server).load_model(
                model,
                headers=_grpc_headers(server),
                config=config_json,
                files=overrides or None,
                client_timeout=self._load_timeout_s,
            )

    async def unload(self, server: Server, model: str) -> None:
        async with self._repository_call(server, model, "unload: "):
            await self._client(server).unload_model(
                model, headers=_grpc_headers(server), client_timeout=self._load_timeout_s
            )

    async def _get(self, server: Server, path: str) -> httpx.Response:
        try:
            return await self._http.get(f"{server.http_url}{path}", headers=_http_headers(server))
        except httpx.HTTPError as exc:
            raise ServerUnavailable(f"{server.id}: {exc}") from exc

    async def loaded(self, server: Server) -> dict[str, LoadedModel]:
        # Models loaded with file overrides are missing from the repository index, so
        # statistics (which list every loaded model) are the source of truth.
        r = await self._get(server, "/v2/models/stats")
        if r.status_code != 200:
            raise ServerUnavailable(f"{server.id}: statistics answered {r.status_code}")
        out: dict[str, LoadedModel] = {}
        for st in r.json().get("model_stats", []):
            usage = st.get("memory_usage") or []
            mem = sum(int(u.get("byte_size", 0)) for u in usage) if usage else None
            out[st["name"]] = LoadedModel(
                name=st["name"],
                version=str(st.get("version", "")),
                ready=True,
                inference_count=int(st.get("inference_count", 0)),
                last_inference_ms=int(st.get("last_inference", 0)),
                memory_bytes=mem,
            )
        return out

    async def config(self, server: Server, model: str) -> dict[str, Any] | None:
        r = await self._get(server, f"/v2/models/{model}/config")
        if r.status_code != 200:
            return None
        body = r.json()
        return body if isinstance(body, dict) else None

    async def close(self) -> None:
        for client in self._grpc.values():
            await client.close()
        self._grpc.clear()
        await self._http.aclose()
