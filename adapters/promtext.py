"""Prometheus text exposition → `MetricSample`s for the core, through prometheus_client's parser.

The core sums samples (`controlplane.tritonmetrics`) but never parses what a server sent: the
parsing of an outside page lives here. prometheus_client reads escaped label values, NaN/±Inf
and timestamps as the format defines them; it stops at the first malformed line, so a page
that does not parse whole is read again line by line, keeping every line that does (one bad
line from a server costs that line, not the scrape).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.parser import text_string_to_metric_families

from controlplane.tritonmetrics import MetricSample


def samples(text: str, families: tuple[str, ...] | None = None) -> list[MetricSample]:
    """Every sample of `text`, or only those whose lines start with one of `families` (the
    parser costs tens of microseconds a line and a Triton page is mostly families nobody here
    reads: the gateway's feed parses every server's page every second). Malformed lines are
    skipped."""
    if families is not None:
        # Comments go too: without `# TYPE` every kept sample keeps the name it was written with.
        text = "\n".join(line for line in text.splitlines() if line.startswith(families))
    try:
        return list(_parse(text))
    except ValueError:
        out: list[MetricSample] = []
        for line in text.splitlines():
            try:
                out.extend(_parse(line))
            except ValueError:
                continue
        return out


def _parse(text: str) -> Iterator[MetricSample]:
    for family in text_string_to_metric_families(text):
        # The parser renames a counter's sample `x` to `x_total` (OpenMetrics); the core
        # matches Triton's own names, which are the family names.
        total = family.name + "_total" if family.type == "counter" else None
        for s in family.samples:
            yield MetricSample(family.name if s.name == total else s.name, s.labels, s.value)
