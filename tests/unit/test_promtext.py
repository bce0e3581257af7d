"""Prometheus text as servers send it, read by `adapters.promtext` (the control plane and the
gateway) and by `loadgen.servermetrics` (standalone): both on prometheus_client's parser."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from adapters.promtext import samples
from controlplane import tritonmetrics
from controlplane.tritonmetrics import MetricSample, ModelTotals
from loadgen import servermetrics

# What Triton 2.51 writes, plus the cases a hand parser gets wrong.
PAGE = r"""# HELP nv_inference_count Number of inferences performed
# TYPE nv_inference_count counter
nv_inference_count{model="plain",version="1"} 40 1700000000000
nv_inference_count{model="quo\"te}, x=\"y",version="1"} 7
nv_inference_count{model="new\nline",version="1"} 2
nv_inference_count{model="nan",version="1"} NaN
nv_inference_count{model="inf",version="1"} +Inf
# HELP nv_inference_exec_count Number of model executions performed
# TYPE nv_inference_exec_count counter
nv_inference_exec_count{model="plain",version="1"} 10
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{model="plain",version="1"} 3 1700000000000
# TYPE nv_inference_request_duration_us histogram
nv_inference_request_duration_us_bucket{model="plain",version="1",le="100"} 4
nv_inference_request_duration_us_bucket{model="plain",version="1",le="+Inf"} 5
nv_inference_request_duration_us_sum{model="plain",version="1"} 900
nv_inference_request_duration_us_count{model="plain",version="1"} 5
# TYPE nv_cpu_utilization gauge
nv_cpu_utilization -Inf
"""


def test_timestamps_escapes_and_special_values_are_read_as_the_format_defines() -> None:
    got = {(s.name, s.labels.get("model")): s.value for s in samples(PAGE)}
    assert got["nv_inference_count", "plain"] == 40  # the timestamp is not the value
    assert got["nv_inference_count", 'quo"te}, x="y'] == 7  # one label value, unescaped
    assert got["nv_inference_count", "new\nline"] == 2
    assert math.isnan(got["nv_inference_count", "nan"])
    assert got["nv_inference_count", "inf"] == math.inf
    assert got["nv_inference_pending_request_count", "plain"] == 3


def test_core_sums_skip_non_finite_values_and_histogram_series() -> None:
    parsed = samples(PAGE)
    per_model = tritonmetrics.model_totals(parsed)
    assert per_model["plain"] == ModelTotals(inferences=40, executions=10)
    assert per_model['quo"te}, x="y'].inferences == 7
    assert "nan" not in per_model and "inf" not in per_model
    t = tritonmetrics.totals(parsed)
    # a histogram's _bucket/_sum/_count are not the counter of the same base name
    assert (t.pending, t.request_us, t.cpu) == (3, 0, 0)
    assert tritonmetrics.totals(
        [MetricSample("nv_inference_request_duration_us", {}, 5.0)]
    ).request_us


def test_reading_only_the_families_the_core_sums_gives_the_same_sums() -> None:
    assert tritonmetrics.model_totals(
        samples(PAGE, tritonmetrics.MODEL_FAMILIES)
    ) == tritonmetrics.model_totals(samples(PAGE))
    assert tritonmetrics.totals(
        samples(PAGE, tritonmetrics.SERVER_FAMILIES)
    ) == tritonmetrics.totals(samples(PAGE))
    kept = {s.name for s in samples(PAGE, tritonmetrics.SERVER_FAMILIES)}
    assert "nv_inference_count" not in kept and "nv_cpu_utilization" in kept


def test_a_malformed_line_costs_that_line_not_the_page() -> None:
    text = PAGE + 'nv_inference_count{model="plain" 1\ngarbage here\n'
    assert tritonmetrics.model_totals(samples(text))["plain"].inferences == 40
    assert servermetrics.parse(text)["plain", "1"]["nv_inference_count"] == 40


def test_loadgen_reads_the_same_page_alike() -> None:
    got = servermetrics.parse(PAGE)
    assert got["plain", "1"] == {"nv_inference_count": 40, "nv_inference_exec_count": 10}
    assert got['quo"te}, x="y', "1"] == {"nv_inference_count": 7}
    assert ("nan", "1") not in got and ("inf", "1") not in got


_LINE_BITS = st.sampled_from(
    ["nv_inference_count", "{", "}", 'model="', '"', "\\", " ", "\n", "#", "1", ".5", "NaN",
     "+Inf", "e", ",", "=", "le", "_bucket", " 17000"]
)  # fmt: skip


@given(st.lists(_LINE_BITS, max_size=60).map("".join) | st.text(max_size=500))
def test_any_text_is_read_without_raising(text: str) -> None:
    parsed = samples(text)
    assert samples(text, tritonmetrics.MODEL_FAMILIES) is not None
    assert all(isinstance(s.value, float | int) for s in parsed)
    for t in tritonmetrics.model_totals(parsed).values():
        assert math.isfinite(t.inferences)
    for series in servermetrics.parse(text).values():
        assert all(math.isfinite(v) for v in series.values())
