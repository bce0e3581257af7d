"""The gateway's own Prometheus metrics, in the text exposition format.

A few dicts and lists rather than `prometheus_client`: the hot path pays one bisect and a few
increments per request, with no locks (the gateway runs on one event loop).

Clients choose the model names they send, so a `model` label is only ever a registered model
(at most `max_models` of them); every other name is counted under `model="(unregistered)"`.
Replica labels come from the control plane, protocol/code/reason labels from fixed sets, so
every series dict here is bounded.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Mapping

from controlplane.loadstats import RequestLog

LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class _Histogram:
    __slots__ = ("count", "counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, v: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS_S, v)] += 1
        self.sum += v
        self.count += 1


UNREGISTERED = "(unregistered)"  # the label of every model name the directory does not know
OTHER = "(other)"  # registered models beyond `max_models`
MAX_MODELS = 1000


class _ByModel(dict[tuple[str, str], int]):
    """Counters keyed (model, label): the model folded by `label`; an absent key reads 0.

    The doors and the router count with `d[model, reason] += 1`; folding on both the read and
    the write keeps that idiom and makes a made-up model name cost nothing.
    """

    __slots__ = ("_label",)

    def __init__(self, label: Callable[[str], str]) -> None:
        super().__init__()
        self._label = label

    def __getitem__(self, key: tuple[str, str]) -> int:
        return self.get((self._label(key[0]), key[1]), 0)

    def __setitem__(self, key: tuple[str, str], value: int) -> None:
        super().__setitem__((self._label(key[0]), key[1]), value)


_OK = frozenset(("200", "OK"))
_REFUSED = frozenset(("429", "RESOURCE_EXHAUSTED"))  # admission: counted by `reject`


class GatewayMetrics:
    def __init__(
        self, clock: Callable[[], float] = time.time, max_models: int = MAX_MODELS
    ) -> None:
        # Per-model sliding windows the autopilot reads (registered models only: the doors
        # record a request only after the directory knew its model).
        self.log = RequestLog()
        self._clock = clock
        self.inflight: Mapping[str, int] = {}  # per model; the router hands over its own dict
        # Is this model registered? The router hands over its directory's answer.
        self.registered: Callable[[str], bool] = lambda model: True
        self.max_models = max_models
        self._labels: dict[str, str] = {}  # registered model -> its label
        # (model, replica, protocol, code) -> count
        self.requests: defaultdict[tuple[str, str, str, str], int] = defaultdict(int)
        self.latency: dict[tuple[str, str], _Histogram] = {}
        self.retries = _ByModel(self.model_label)  # (model, reason)
        self.ejections: defaultdict[str, int] = defaultdict(int)  # replica
        self.cold_holds = _ByModel(self.model_label)  # (model, outcome)
        self.rejections = _ByModel(self.model_label)  # (model, reason)
        # client connections closed at once over max_client_connections, by protocol
        self.rejected_connections: defaultdict[str, int] = defaultdict(int)
        # client connections closed by the reaper: (protocol, header_timeout | idle_timeout)
        self.closed_connections: defaultdict[tuple[str, str], int] = defaultdict(int)

    def model_label(self, model: str) -> str:
        """`model` itself if registered (and among the first `max_models`), else one shared label."""
        label = self._labels.get(model)
        if label is not None:
            return label
        if not self.registered(model):
            return UNREGISTERED  # not remembered: made-up names must not grow anything
        if len(self._labels) >= self.max_models:
            return OTHER
        self._labels[model] = model
        return model

    def observe(self, model: str, replica: str, protocol: str, code: str, latency_s: float) -> None:
        label = self._labels.get(model) or self.model_label(model)
        self.requests[label, replica, protocol, code] += 1
        h = self.latency.get((label, replica))
        if h is None:
            h = self.latency[label, replica] = _Histogram()
        h.observe(latency_s)
        self.log.record(model, latency_s, code in _OK, self._clock())

    def local(self, model: str, protocol: str, code: str) -> None:
        """A registered model's request answered by the gateway itself (no replica reached)."""
        self.requests[self.model_label(model), "", protocol, code] += 1
        if code not in _REFUSED:
            self.log.record(model, 0.0, False, self._clock())

    def reject(self, model: str, reason: str) -> None:
        """Refused by admission: offered load the autopilot must see, not an error."""
        self.rejections[model, reason] += 1
        self.log.reject(model, self._clock())

    def render(self) -> bytes:
        out: list[str] = []

        def family(name: str, kind: str, help_: str) -> None:
            out.append(f"# HELP {name} {help_}\n# TYPE {name} {kind}\n")

        family("tritonfleet_gateway_requests_total", "counter", "Requests answered, by outcome.")
        for (m, r, p, c), v in sorted(self.requests.items()):
            out.append(
                f'tritonfleet_gateway_requests_total{{model="{_esc(m)}",replica="{_esc(r)}",'
                f'protocol="{p}",code="{c}"}} {v}\n'
            )
        family(
            "tritonfleet_gateway_request_duration_seconds",
            "histogram",
            "Time from request read to response written, per model and replica.",
        )
        for (m, r), h in sorted(self.latency.items()):
            labels = f'model="{_esc(m)}",replica="{_esc(r)}"'
            cum = 0
            for bound, n in zip((*LATENCY_BUCKETS_S, float("inf")), h.counts, strict=True):
                cum += n
                le = "+Inf" if bound == float("inf") else repr(bound)
                out.append(
                    f'tritonfleet_gateway_request_duration_seconds_bucket{{{labels},le="{le}"}} {cum}\n'
                )
            out.append(f"tritonfleet_gateway_request_duration_seconds_sum{{{labels}}} {h.sum}\n")
            out.append(
                f"tritonfleet_gateway_request_duration_seconds_count{{{labels}}} {h.count}\n"
            )
        family("tritonfleet_gateway_inflight", "gauge", "Requests in flight through the gateway.")
        # Registered models seen, 0 when idle (the router drops a model's key at zero).
        for m in sorted(self._labels.keys() | self.inflight.keys()):
            v = self.inflight.get(m, 0)
            out.append(f'tritonfleet_gateway_inflight{{model="{_esc(m)}"}} {v}\n')
        for name, help_, data, keys in (
            ("retries", "Requests sent again to another replica.", self.retries, ("model", "reason")),
            ("ejections", "Replicas ejected by outlier detection.", self.ejections, ("replica",)),
            ("cold_holds", "Requests held while a cold model loaded.", self.cold_holds, ("model", "outcome")),
            ("rejections", "Requests refused by the gateway itself.", self.rejections, ("model", "reason")),
            ("rejected_connections", "Client connections closed at once (max_client_connections).", self.rejected_connections, ("protocol",)),
            ("closed_connections", "Client connections closed by the gateway (header_timeout, idle_timeout, flood, protocol_error, write_stall).", self.closed_connections, ("protocol", "reason")),
        ):  # fmt: skip
            family(f"tritonfleet_gateway_{name}_total", "counter", help_)
            for k, v in sorted(data.items()):
                kt = k if isinstance(k, tuple) else (k,)
                labels = ",".join(f'{n}="{_esc(x)}"' for n, x in zip(keys, kt, strict=True))
                out.append(f"tritonfleet_gateway_{name}_total{{{labels}}} {v}\n")
        return "".join(out).encode()


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
