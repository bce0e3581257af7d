"""Triton's own view of the same window: queue and compute time from its Prometheus metrics.

Counters are scraped at the start and the end of the measured window; the difference divided
by the request count gives the server-side average queue and compute time per request, which
sits next to loadgen's client-side latency in the report (the gap is network, HTTP/gRPC
framing and client overhead). Parsing (prometheus_client's parser) is pure; only `Scraper`
does I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

COUNTERS = (
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
)

# (model, version) -> counter name -> value
Sample = dict[tuple[str, str], dict[str, float]]


def parse(text: str) -> Sample:
    """Per-model counters from Prometheus text exposition; unknown series, malformed lines
    and NaN/±Inf values are skipped."""
    out: Sample = {}
    for name, labels, value in _samples(text):
        if name not in COUNTERS or not math.isfinite(value):
            continue
        key = (labels.get("model", ""), labels.get("version", ""))
        series = out.setdefault(key, {})
        series[name] = series.get(name, 0.0) + value
    return out


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """prometheus_client's parser stops at the first malformed line: then read line by line."""
    try:
        return list(_parse(text))
    except ValueError:
        out: list[tuple[str, dict[str, str], float]] = []
        for line in text.splitlines():
            try:
                out.extend(_parse(line))
            except ValueError:
                continue
        return out


def _parse(text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    for family in text_string_to_metric_families(text):
        # a counter's samples come back as `x_total`; Triton's names are the family names
        total = family.name + "_total" if family.type == "counter" else None
        for s in family.samples:
            yield (family.name if s.name == total else s.name), s.labels, s.value


@dataclass(frozen=True)
class ServerWindow:
    """Server-side counters for one model over the measured window."""

    requests_success: int
    requests_failure: int
    inferences: int
    executions: int
    avg_request_us: float | None
    avg_queue_us: float | None
    avg_compute_input_us: float | None
    avg_compute_infer_us: float | None
    avg_compute_output_us: float | None

    @property
    def avg_batch(self) -> float | None:
        return self.inferences / self.executions if self.executions else None


def delta(before: Sample, after: Sample, model: str) -> ServerWindow | None:
    """The window's counters for `model` (all versions summed); None if it never appeared."""

    def total(sample: Mapping[tuple[str, str], dict[str, float]], name: str) -> float:
        return sum(v.get(name, 0.0) for (m, _), v in sample.items() if m == model)

    if not any(m == model for m, _ in after):
        return None

    def d(name: str) -> float:
        return total(after, name) - total(before, name)

    ok = int(d("nv_inference_request_success"))
    fail = int(d("nv_inference_request_failure"))
    n = ok + fail

    def avg(name: str) -> float | None:
        return d(name) / n if n else None

    return ServerWindow(
        requests_success=ok,
        requests_failure=fail,
        inferences=int(d("nv_inference_count")),
        executions=int(d("nv_inference_exec_count")),
        avg_request_us=avg("nv_inference_request_duration_us"),
        avg_queue_us=avg("nv_inference_queue_duration_us"),
        avg_compute_input_us=avg("nv_inference_compute_input_duration_us"),
        avg_compute_infer_us=avg("nv_inference_compute_infer_duration_us"),
        avg_compute_output_us=avg("nv_inference_compute_output_duration_us"),
    )


class Scraper:
    """Reads one Triton metrics endpoint (`http://host:8002/metrics`) over a kept-open client.

    The client is built before the run starts: creating one (TLS context and all) takes tens
    of milliseconds, which inside the run would stall the dispatcher.
    """

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        import httpx

        self.url = url
        self._httpx = httpx
        self._client = httpx.AsyncClient(timeout=timeout_s)

    async def sample(self) -> Sample:
        from loadgen.errors import TargetError

        try:
            r = await self._client.get(self.url)
            r.raise_for_status()
        except self._httpx.HTTPError as exc:
            raise TargetError(
                f"cannot read Triton metrics at {self.url} ({exc}); check --server-metrics"
            ) from exc
        return parse(r.text)

    async def close(self) -> None:
        await self._client.aclose()
