"""What the HTTP/2 frame-level gRPC door must get right beyond the protocol tests.

Flow control with messages far larger than any window, many calls multiplexed on one client
connection and one connection per replica, a replica connection lost in the middle of a
stream, and the request-size limit. Each test runs a gateway of its own (grpc_door h2) over
the session's real Triton servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aiogrpcclient
from tritonclient.utils import InferenceServerException

from adapters.gateway.app import Gateway
from adapters.gateway.config import GatewayConfig
from adapters.gateway.demofleet import DemoModel, load_everywhere
from adapters.gateway.directory import StaticDirectory
from adapters.gateway.grpcproto import Status
from adapters.gateway.h2door import H2Door
from adapters.gateway.h2wire import DATA, END_STREAM, frame
from controlplane.replicas import ModelRouting, Replica, replica_on
from tests.gateway.cases import CASES, check
from tests.gateway.hostile_h2 import RawH2, Reply, infer_request, message
from tests.gateway.support import Env, run_async

pytestmark = pytest.mark.triton


def _gateway(env: Env, directory: StaticDirectory, **cfg: object) -> Gateway:
    config = GatewayConfig(http_port=0, grpc_port=0, grpc_door="h2", **cfg)  # type: ignore[arg-type]
    gw = Gateway(config, directory)
    env.loop.run(gw.start())
    return gw


@pytest.fixture
def gw(env: Env) -> Iterator[Gateway]:
    g = _gateway(env, env.directory, max_body_bytes=64 << 20)
    yield g
    env.loop.run(g.stop())


def _bytes_input(mod: object, elements: list[bytes]) -> list[object]:
    x = np.array([elements], dtype=np.object_)
    i = mod.InferInput("INPUT0", list(x.shape), "BYTES")  # type: ignore[attr-defined]
    i.set_data_from_numpy(x)
    return [i]


def test_large_messages_both_ways_do_not_deadlock(gw: Gateway) -> None:
    # 4 x 1.5 MiB each way: far past HTTP/2's 64 KiB default windows on every hop.
    elements = [bytes([65 + k]) * (3 << 19) for k in range(4)]
    assert gw.grpc_url is not None
    c = grpcclient.InferenceServerClient(gw.grpc_url)
    try:
        for _ in range(3):
            out = c.infer("echo_bytes", _bytes_input(grpcclient, elements), client_timeout=30)
            assert [bytes(v) for v in out.as_numpy("OUTPUT0").ravel()] == elements
        # and small calls still flow on the same connections afterwards
        x = CASES["double_fp32"][1]
        i = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
        i.set_data_from_numpy(x)
        check("double_fp32", c.infer("double_fp32", [i]).as_numpy("OUTPUT0"))
    finally:
        c.close()


def test_request_over_the_size_limit_is_refused_unread(env: Env) -> None:
    g = _gateway(env, env.directory, max_body_bytes=1 << 20)
    try:
        assert g.grpc_url is not None
        c = grpcclient.InferenceServerClient(g.grpc_url)
        try:
            with pytest.raises(InferenceServerException, match="max_body_bytes") as e:
                c.infer("echo_bytes", _bytes_input(grpcclient, [b"x" * (2 << 20)] * 4))
            assert e.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
            assert c.is_model_ready("echo_bytes")  # the connection is still good
        finally:
            c.close()
    finally:
        env.loop.run(g.stop())


def test_many_concurrent_calls_and_streams_on_one_connection(gw: Gateway) -> None:
    assert gw.grpc_url is not None
    url = gw.grpc_url

    async def go() -> None:
        c = aiogrpcclient.InferenceServerClient(url)  # one channel: one HTTP/2 connection
        try:

            async def unary(model: str) -> None:
                dtype, x, _ = CASES[model]
                i = aiogrpcclient.InferInput("INPUT0", list(x.shape), dtype)
                i.set_data_from_numpy(x)
                check(model, (await c.infer(model, [i])).as_numpy("OUTPUT0"))

            await asyncio.gather(*(unary(m) for _ in range(60) for m in CASES))
        finally:
            await c.close()

    run_async(go())
    # Meanwhile streams on another connection: 8 open at once, 5 requests each.
    results: queue.Queue[object] = queue.Queue()
    clients = [grpcclient.InferenceServerClient(url) for _ in range(8)]
    try:
        for c in clients:
            c.start_stream(callback=lambda result, error: results.put(error or result))
        x = CASES["add1_int64"][1]
        for _ in range(5):
            for c in clients:
                i = grpcclient.InferInput("INPUT0", list(x.shape), "INT64")
                i.set_data_from_numpy(x)
                c.async_stream_infer("add1_int64", [i])
        for c in clients:
            c.stop_stream()
    finally:
        for c in clients:
            c.close()
    got = [results.get(timeout=10) for _ in range(40)]
    for r in got:
        assert not isinstance(r, Exception), r
        check("add1_int64", r.as_numpy("OUTPUT0"))  # type: ignore[attr-defined]
    door = gw._grpc
    assert isinstance(door, H2Door)
    # every call above went over at most one HTTP/2 connection per replica
    assert len(door.pool.conns) <= len(gw.router.directory.replicas("add1_int64"))


class _Relay:
    """A TCP relay in front of one Triton gRPC port whose connections the test can cut."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                a, _ = self.listener.accept()
            except OSError:
                return
            b = socket.create_connection(self.target)
            self.socks += [a, b]
            for src, dst in ((a, b), (b, a)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        for s in self.socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self.socks.clear()

    def close(self) -> None:
        self.listener.close()
        self.cut()


def test_replica_connection_lost_mid_stream(env: Env) -> None:
    server = env.snapshot.servers[0]
    relay = _Relay(server.grpc_url)
    d = StaticDirectory()
    d.put_replicas("double_fp32", [replace(replica_on(server, "double_fp32"), grpc_url=relay.url)])
    g = _gateway(env, d)
    results: queue.Queue[object] = queue.Queue()
    assert g.grpc_url is not None
    c = grpcclient.InferenceServerClient(g.grpc_url)
    try:
        x = CASES["double_fp32"][1]
        i = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
        i.set_data_from_numpy(x)
        c.start_stream(callback=lambda result, error: results.put(error or result))
        c.async_stream_infer("double_fp32", [i])
        first = results.get(timeout=10)
        assert not isinstance(first, Exception), first
        relay.cut()
        err = results.get(timeout=10)
        assert isinstance(err, InferenceServerException), err
        assert err.status() == "StatusCode.UNAVAILABLE"
        assert "lost" in str(err.message())
        c.stop_stream()
        # the next call opens a fresh connection to the replica
        check("double_fp32", c.infer("double_fp32", [i]).as_numpy("OUTPUT0"))
        text = g.metrics.render().decode()
        code = f'model="double_fp32",replica="{server.id}",protocol="grpc",code="UNAVAILABLE"'
        assert code in text
    finally:
        c.close()
        relay.close()
        env.loop.run(g.stop())


def _fp32_input() -> list[object]:
    x = CASES["double_fp32"][1]
    i = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    return [i]


def test_failed_replica_connection_is_retried_on_another(env: Env) -> None:
    server = env.snapshot.servers[0]
    dead = socket.create_server(("127.0.0.1", 0))
    dead_url = f"127.0.0.1:{dead.getsockname()[1]}"
    dead.close()  # nothing listens there now: connections are refused
    d = StaticDirectory()
    good = replica_on(server, "double_fp32")
    bad = replace(good, server_id="dead", grpc_url=dead_url)
    d.put_replicas("double_fp32", [bad, good])
    g = _gateway(env, d, policy="round-robin")
    assert g.grpc_url is not None
    c = grpcclient.InferenceServerClient(g.grpc_url)
    try:
        for _ in range(4):  # round-robin sends some first attempts to the dead one
            check("double_fp32", c.infer("double_fp32", _fp32_input()).as_numpy("OUTPUT0"))
        text = g.metrics.render().decode()
        assert 'retries_total{model="double_fp32",reason="connection_lost"}' in text
    finally:
        c.close()
        env.loop.run(g.stop())


def test_cold_model_is_held_until_warm(env: Env) -> None:
    replicas = [replica_on(s, "double_fp32") for s in env.snapshot.servers]

    async def warm(model: str) -> list[Replica]:
        await asyncio.sleep(0.3)
        return replicas

    d = StaticDirectory(warm=warm)
    d.register(ModelRouting("double_fp32"))
    g = _gateway(env, d, cold_hold_s=5.0)
    assert g.grpc_url is not None
    c = grpcclient.InferenceServerClient(g.grpc_url)
    try:
        check("double_fp32", c.infer("double_fp32", _fp32_input()).as_numpy("OUTPUT0"))
        assert d.ensure_calls == ["double_fp32"]
    finally:
        c.close()
        env.loop.run(g.stop())


def test_a_clients_own_short_deadline_never_ejects_a_replica(env: Env) -> None:
    # The h2 door forwards the client's grpc-timeout to Triton, which answers
    # DEADLINE_EXCEEDED when it runs out. That is the client's choice, not the replica's
    # failure: counted as one, a client sending `grpc-timeout: 50m` to a 300 ms model would
    # eject healthy replicas (3 in a row each) at will.
    model = DemoModel("slow_double_fp32_300", "TYPE_FP32", "double", service_ms=300.0)
    env.loop.run(load_everywhere(env.snapshot, [model]))
    d = StaticDirectory()
    d.put(model.name, env.snapshot.servers)
    g = _gateway(env, d, policy="round-robin", upstream_timeout_s=30.0)
    assert g.grpc_url is not None
    url = g.grpc_url

    async def calls(extra: tuple[tuple[str, str], ...], n: int) -> list[int | None]:
        c = await RawH2.connect(url)
        try:
            out = []
            for k in range(n):
                sid = 1 + 2 * k
                c.send(
                    c.headers(sid, "ModelInfer", extra=extra),
                    frame(DATA, END_STREAM, sid, message(infer_request(model.name))),
                )
                await c.flush()
                await c.until(lambda s=sid: c.replies.get(s, Reply()).status is not None, 10.0)
                out.append(c.replies.get(sid, Reply()).status)
            return out
        finally:
            c.close()

    try:
        statuses = env.loop.run(calls((("grpc-timeout", "50m"),), 8))
        assert statuses == [Status.DEADLINE_EXCEEDED] * 8, statuses
        text = g.metrics.render().decode()
        assert "ejections_total{" not in text, text
        # Without a client deadline the same model answers, and both replicas still serve.
        assert env.loop.run(calls((), 2)) == [Status.OK] * 2
    finally:
        env.loop.run(g.stop())
