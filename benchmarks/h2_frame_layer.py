"""The HTTP/2 frame layer of the gRPC door: today's `h2wire` against hyper-h2 (`h2`) on one workload.

    PYTHONPATH=. python -m benchmarks.h2_frame_layer [--calls 20000] [--per-read 4]

The workload is what the door's server side does per unary gRPC call, without routing:
read the client's HEADERS (HPACK with a dynamic table, as grpc clients send it) and DATA
(one ModelInfer message, END_STREAM), credit the data, and write the reply (HEADERS, DATA,
trailers). Input arrives `--per-read` calls per `data_received` (a concurrency of 4 reads
about that). Both run in this process, CPU only: microseconds of CPU per call, median of 5
repetitions. Then both are fed the attacks of `tests/gateway/hostile_h2.py` as bytes, to see
what each bounds on its own. hyper-h2 comes with the dev extra (`./scripts/setup`); it is not
a dependency of tritonfleet itself.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hpack

from adapters.gateway.h2calls import HEAD, OK_TRAILERS
from adapters.gateway.h2wire import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    PING,
    PREFACE,
    SETTINGS,
    WINDOW_UPDATE,
    Peer,
    frame,
)
from tests.gateway.hostile_h2 import SERVICE, infer_request, message, settings

CHUNK = 1 << 16  # bytes per data_received in the attacks
REPLY = message(b"\x0a\x0bdouble_fp32" + b"\x2a" * 40)


def client_bytes(calls: int, per_read: int) -> list[bytes]:
    enc = hpack.Encoder()
    body = message(infer_request())
    # windows wide open, as a reading client keeps them: replies never wait
    opening = frame(SETTINGS, 0, 0, settings(s4=(1 << 31) - 1))
    opening += frame(WINDOW_UPDATE, 0, 0, ((1 << 31) - 1 - 65535).to_bytes(4, "big"))
    reads, batch = [PREFACE + opening], []
    for k in range(calls):
        sid = 1 + 2 * k
        block = enc.encode(
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", SERVICE + "ModelInfer"),
                (":authority", "127.0.0.1:8001"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                ("user-agent", "grpc-python/1.70"),
            ]
        )
        batch.append(frame(HEADERS, END_HEADERS, sid, block) + frame(DATA, END_STREAM, sid, body))
        if len(batch) == per_read:
            reads.append(b"".join(batch))
            batch = []
    if batch:
        reads.append(b"".join(batch))
    return reads


class _Sink:
    def __init__(self) -> None:
        self.n = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        self.n += len(data)

    def close(self) -> None:
        self.closed = True

    abort = close


class _WireServer(Peer):
    """h2wire doing the door's per-call work: open, credit, reply."""

    expect_preface = True

    def __init__(self) -> None:
        super().__init__()
        self.done = 0

    def on_headers(self, sid: int, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        self.open_stream(sid)

    def on_data(self, sid: int, data: bytes, end: bool) -> None:
        self.credit(sid, len(data))
        if end:
            self.send_message(sid, HEAD, REPLY, OK_TRAILERS, True)
            self.done += 1

    def on_reset(self, sid: int, code: int) -> None:
        pass


def run_h2wire(reads: list[bytes]) -> tuple[int, _Sink]:
    p, sink = _WireServer(), _Sink()
    p.connection_made(sink)  # type: ignore[arg-type]
    for r in reads:
        p.data_received(r)
    return p.done, sink


_H2_CONFIG = h2.config.H2Configuration(client_side=False, header_encoding=None)
# the same without header validation and normalisation (the door does neither today)
_H2_LEAN = h2.config.H2Configuration(
    client_side=False,
    header_encoding=None,
    validate_inbound_headers=False,
    normalize_inbound_headers=False,
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
)


def _h2_server(config: h2.config.H2Configuration = _H2_CONFIG) -> h2.connection.H2Connection:
    c = h2.connection.H2Connection(config=config)
    c.initiate_connection()
    c.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 128})
    c.data_to_send()
    return c


def run_h2(reads: list[bytes], config: h2.config.H2Configuration = _H2_CONFIG) -> tuple[int, _Sink]:
    c, sink, done = _h2_server(config), _Sink(), 0
    head = [(b":status", b"200"), (b"content-type", b"application/grpc")]
    trailers = [(b"grpc-status", b"0")]
    for r in reads:
        for ev in c.receive_data(r):
            if isinstance(ev, h2.events.DataReceived):
                c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                if ev.stream_ended is not None:
                    sid = ev.stream_id
                    c.send_headers(sid, head)
                    c.send_data(sid, REPLY)
                    c.send_headers(sid, trailers, end_stream=True)
                    done += 1
        sink.write(c.data_to_send())
    return done, sink


def run_h2_lean(reads: list[bytes]) -> tuple[int, _Sink]:
    return run_h2(reads, _H2_LEAN)


def timed(fn: Callable[[list[bytes]], tuple[int, _Sink]], reads: list[bytes], calls: int) -> float:
    runs = []
    for _ in range(5):
        t = time.perf_counter()
        done, _ = fn(reads)
        runs.append(time.perf_counter() - t)
        assert done == calls, (fn.__name__, done)
    return statistics.median(runs) / calls * 1e6


def attacks() -> dict[str, bytes]:
    enc = hpack.Encoder()
    start = PREFACE + frame(SETTINGS, 0, 0)
    return {
        "continuation flood (16 MiB)": start
        + frame(HEADERS, 0, 1, enc.encode([(":path", SERVICE + "ModelInfer")]))
        + frame(CONTINUATION, 0, 1, b"\x00" * 16000) * 1000,
        "ping flood (100k)": start + frame(PING, 0, 0, b"12345678") * 100_000,
        "settings flood (100k)": start + frame(SETTINGS, 0, 0) * 100_000,
        "SETTINGS_MAX_FRAME_SIZE 0": start + frame(SETTINGS, 0, 0, b"\x00\x05\x00\x00\x00\x00"),
    }


def attack_h2wire(data: bytes) -> str:
    p, sink = _WireServer(), _Sink()
    p.connection_made(sink)  # type: ignore[arg-type]
    t = time.perf_counter()
    for i in range(0, len(data), CHUNK):
        if sink.closed:
            break
        p.data_received(data[i : i + CHUNK])
    ms = (time.perf_counter() - t) * 1e3
    return f"{'closed' if sink.closed else 'open'} after {min(i + CHUNK, len(data))} bytes, {ms:.1f} ms, {sink.n} bytes out"


def attack_h2(data: bytes) -> str:
    c = _h2_server()
    t = time.perf_counter()
    out = 0
    try:
        for i in range(0, len(data), CHUNK):
            c.receive_data(data[i : i + CHUNK])
            out += len(c.data_to_send())
        verdict = "accepted"
    except h2.exceptions.ProtocolError as exc:
        verdict = f"{type(exc).__name__} after {i + CHUNK} bytes"
    ms = (time.perf_counter() - t) * 1e3
    return f"{verdict}, {ms:.1f} ms, {out} bytes out"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--per-read", type=int, default=4)
    args = ap.parse_args()
    reads = client_bytes(args.calls, args.per_read)
    wire_us = timed(run_h2wire, reads, args.calls)
    h2_us = timed(run_h2, reads, args.calls)
    lean_us = timed(run_h2_lean, reads, args.calls)
    print(f"h2 {h2.__version__}, {args.calls} unary calls, {args.per_read} per read")
    print(f"h2wire              {wire_us:6.1f} us/call")
    print(f"h2                  {h2_us:6.1f} us/call  ({h2_us / wire_us:.1f}x)")
    print(f"h2, no validation   {lean_us:6.1f} us/call  ({lean_us / wire_us:.1f}x)")
    for name, data in attacks().items():
        print(f"{name:30} h2wire: {attack_h2wire(data)}")
        print(f"{'':30} h2:     {attack_h2(data)}")


if __name__ == "__main__":
    main()
