"""The dashboard's core: the bounded decision feed, the per-model timeline, and what the
reconciler and autopilot publish to them (over the core's fakes and fake time)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.memstore import MemoryStore
from controlplane import visibility
from controlplane.autopilot import Autopilot, FleetBounds
from controlplane.autoscale import ScalerConfig
from controlplane.events import EventFeed, EventKind
from controlplane.fleet import FleetSnapshot
from controlplane.reconciler import Reconciler, ReconcilerConfig
from controlplane.timeline import COLUMNS, Point, Targets, Timeline, encode, row
from tests.fakes import FakeFleet, FakeLoadSignals, FakeTritonControl, InlineArtifacts
from tests.unit.test_autopilot_loop import MiB, _rec, _register, load
from tests.unit.test_reconciler import Clock


def _latency(rec: Any, sees: Any, since: float | None, limit: int) -> dict[str, Any]:
    """The latency view as the control API sends it, decoded."""
    doc: dict[str, Any] = json.loads("".join(rec.latency_json(sees, since, limit).chunks))
    return doc


def _feed(n: int, capacity: int) -> EventFeed:
    feed = EventFeed(capacity)
    for i in range(n):
        feed.publish(EventKind.AUTOPILOT, f"m{i % 3}", f"event {i}", float(i))
    return feed


def test_since_pages_through_in_order_and_resumes() -> None:
    feed = _feed(10, 100)
    page = feed.since(0, 4)
    assert [e.seq for e in page.events] == [1, 2, 3, 4] and page.cursor == 4 and not page.missed
    page = feed.since(page.cursor, 100)
    assert [e.seq for e in page.events] == list(range(5, 11)) and page.cursor == 10
    assert feed.since(10, 100).events == ()
    assert [e.seq for e in feed.since(feed.recent(3), 100).events] == [8, 9, 10]


def test_a_reader_behind_the_ring_is_told_what_it_missed() -> None:
    feed = _feed(25, 10)  # holds seq 16..25
    page = feed.since(3, 100)
    assert page.missed == 12  # 4..15
    assert [e.seq for e in page.events] == list(range(16, 26))


def test_a_cursor_from_another_run_starts_over() -> None:
    feed = _feed(5, 10)
    assert [e.seq for e in feed.since(999, 100).events] == [1, 2, 3, 4, 5]


def test_visible_filters_but_the_cursor_moves_past_hidden_events() -> None:
    feed = _feed(9, 100)
    owner = visibility.Owner(frozenset({"m1"}))
    page = feed.since(0, 100, lambda e: e.model is not None and owner.sees(e.model))
    assert {e.model for e in page.events} == {"m1"} and page.cursor == 9


@given(
    n=st.integers(0, 60),
    capacity=st.integers(1, 20),
    cursor=st.integers(-5, 80),
    limit=st.integers(1, 30),
)
def test_since_never_exceeds_limit_and_accounts_for_every_event(
    n: int, capacity: int, cursor: int, limit: int
) -> None:
    feed = _feed(n, capacity)
    page = feed.since(cursor, limit)
    assert len(page.events) <= limit
    seqs = [e.seq for e in page.events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    start = cursor if 0 <= cursor <= n else 0
    if seqs:
        assert seqs[0] == start + page.missed + 1  # nothing skipped silently
        assert page.cursor == seqs[-1]
    assert page.cursor <= n


def test_wait_wakes_on_publish_and_times_out_without() -> None:
    async def scenario() -> None:
        feed = EventFeed(10)
        assert not await feed.wait(0, 0.01)
        waiter = asyncio.create_task(feed.wait(0, 30))
        await asyncio.sleep(0)
        feed.publish(EventKind.FLEET, None, "servers 1 → 2", 0.0)
        assert await waiter

    asyncio.run(scenario())


def test_feed_and_timeline_refuse_useless_sizes() -> None:
    with pytest.raises(ValueError):
        EventFeed(0)
    with pytest.raises(ValueError):
        Timeline(1)


def test_timeline_is_bounded_per_model_and_forgets_deleted_models() -> None:
    tl = Timeline(5)
    for i in range(12):
        tl.add("a", Point(float(i), 1.0, 0.01, 0.02, 0.03, 0.0, 1, 1), Targets(0.1, 0.2))
    tl.add("b", Point(0.0, 0, None, None, None, 0.0, 0, 1), Targets())
    assert [p.at for p in tl.points("a")] == [7, 8, 9, 10, 11]
    assert [p.at for p in tl.points("a", since=9)] == [10, 11]
    assert [p.at for p in tl.points("a", limit=2)] == [10, 11]
    assert tl.targets("a") == Targets(0.1, 0.2)
    tl.retain(["a"])
    assert tl.models() == ["a"] and tl.points("b") == [] and tl.targets("b") == Targets()
    assert len(COLUMNS) == 8


def test_timeline_keeps_values_finite_and_walks_back_from_the_newest() -> None:
    tl = Timeline(10)
    nan, inf = float("nan"), float("inf")
    tl.add("m", Point(1.0, nan, inf, -inf, nan, nan, 1, 1), Targets(inf, nan, inf))
    (p,) = tl.points("m")
    assert (p.rate_rps, p.p50_s, p.p95_s, p.p99_s, p.error_rate) == (0.0, None, None, None, 0.0)
    assert tl.targets("m") == Targets(None, None, None)
    for i in range(2, 8):
        tl.add("m", Point(float(i), 1.0, 0.01, 0.02, 0.03, 0.0, 1, 1), Targets())
    assert [p.at for p in tl.points("m", since=5.5)] == [6, 7]
    assert [p.at for p in tl.points("m", since=5.5, limit=1)] == [7]
    assert tl.points("m", since=7) == [] and tl.points("m", limit=0) == []


_finite_or_not = st.one_of(
    st.none(), st.floats(allow_nan=True, allow_infinity=True), st.floats(-1e6, 1e6)
)


@given(
    values=st.lists(st.tuples(_finite_or_not, _finite_or_not, st.integers(0, 64)), max_size=30),
    since=st.one_of(st.none(), st.floats(-5, 40, allow_nan=False)),
    limit=st.one_of(st.none(), st.integers(0, 40)),
)
def test_rows_json_is_the_encoded_points_byte_for_byte(
    values: list[tuple[float | None, float | None, int]], since: float | None, limit: int | None
) -> None:
    """The latency routes send `rows_json`: it must be what encoding `points` would give."""
    tl = Timeline(20)
    for i, (rate, p99, ready) in enumerate(values):
        tl.add("m", Point(i + 0.5, rate or 0.0, p99, p99, p99, 0.0, ready, 1), Targets())
    assert tl.rows_json("m", since, limit) == encode([row(p) for p in tl.points("m", since, limit)])
    assert tl.rows_json("absent", since, limit) == "[]"


def test_reading_the_timeline_encodes_nothing_and_costs_at_most_limit_rows() -> None:
    """The gross failure this guards: a dashboard read rebuilding and encoding every model's
    history (100 models x 600 points blocked the shared event loop for 50-300 ms). Rows are
    encoded once, when added; a read only joins at most `limit` of them per model."""
    tl = Timeline(600)
    for m in range(20):
        for i in range(600):
            tl.add(f"m{m}", Point(float(i), 1.0, 0.01, 0.02, 0.03, 0.0, 1, 1), Targets())
    assert tl.rows_encoded == 20 * 600
    for _ in range(50):
        for m in range(20):
            assert tl.rows_json(f"m{m}", None, 300).count("[") == 1 + 300
            assert tl.rows_json(f"m{m}", 598.5, 300).count("[") == 1 + 1
    assert tl.rows_encoded == 20 * 600  # not one row encoded again by 2,000 reads
    tl.add("m0", Point(600.0, 1.0, 0.01, 0.02, 0.03, 0.0, 1, 1), Targets())
    assert tl.rows_encoded == 20 * 600 + 1


class CountingFleet(FakeFleet):
    """A `FakeFleet` that counts `refresh` calls: one per reconciler tick."""

    refreshes = 0

    async def refresh(self) -> FleetSnapshot:
        self.refreshes += 1
        return await super().refresh()


def test_following_the_loop_with_next_tick_does_not_make_it_spin() -> None:
    """The timeline gets one point per tick, so ticks must keep their interval: a loop that
    follows the reconciler (usage accounting) waits with `next_tick`, which asks for none.
    (`wait_ticks` wakes the loop: followed in a loop, the reconciler ticked back to back and a
    chart's 300 points spanned 3 s.)"""

    async def scenario() -> None:
        fleet = CountingFleet(1, 512 * MiB)
        rec = Reconciler(
            fleet,
            FakeTritonControl(fleet),
            MemoryStore(),
            InlineArtifacts(),
            clock=Clock(),
            rng=random.Random(1),
            config=ReconcilerConfig(interval_s=3600),
        )
        loop = asyncio.create_task(rec.run())
        try:
            await rec.next_tick(30)  # the tick run() starts with
            for _ in range(5):
                with contextlib.suppress(TimeoutError):
                    await rec.next_tick(0.05)
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
        assert fleet.refreshes == 1

    asyncio.run(scenario())


def test_the_loop_publishes_decisions_placements_outcomes_and_fleet_changes() -> None:
    async def scenario() -> None:
        fleet, store, clock = FakeFleet(1, 512 * MiB, max_servers=2), MemoryStore(), Clock()
        control = FakeTritonControl(fleet)
        signals = FakeLoadSignals()
        await _register(store)
        pilot = Autopilot(signals, ScalerConfig(), FleetBounds(1, 2, idle_s=5))
        rec = _rec(fleet, control, store, clock, pilot)

        async def tick(n: int) -> None:
            for _ in range(n):
                clock.now += 1
                await rec.tick()
                await rec.wait_idle()
                await asyncio.sleep(0)

        signals.readings["m"] = load(5, p99_s=0.05)
        await tick(2)
        signals.readings["m"] = load(100, p99_s=0.4)
        await tick(4)
        events = rec.events.since(0, 1000).events
        kinds = [e.kind for e in events]
        assert EventKind.PLACEMENT in kinds and EventKind.REPLICA in kinds
        assert EventKind.FLEET in kinds and EventKind.AUTOPILOT in kinds
        up = next(e for e in events if e.kind is EventKind.AUTOPILOT and "1 → 2" in e.summary)
        assert up.model == "m" and up.detail["desired"] == 2 and up.detail["reason"]
        loads = [e for e in events if e.kind is EventKind.PLACEMENT]
        assert len({(e.model, e.detail["server"]) for e in loads}) == len(loads)  # once each
        assert all(e.at >= 1_000 for e in events)

        body = _latency(rec, lambda _m: True, None, 100)
        assert body["columns"] == list(COLUMNS) and body["autopilot"] is True
        m = body["models"]["m"]
        assert m["slo"]["p95_s"] == pytest.approx(0.1) and m["slo"]["p99_s"] == pytest.approx(0.2)
        assert len(m["points"]) == 6
        at, rate, *_rest, _ready, desired = m["points"][-1]
        assert at == clock.now and rate == pytest.approx(100, rel=0.01) and desired == 2
        assert m["points"][-1][COLUMNS.index("p99_s")] == pytest.approx(0.4)
        since = _latency(rec, lambda _m: True, m["points"][-2][0], 100)
        assert len(since["models"]["m"]["points"]) == 1
        assert _latency(rec, lambda _m: False, None, 100)["models"] == {}
        doc = rec.latency_json(lambda m: m == "m", None, 3)
        assert doc.models == ("m",)
        assert len(json.loads("".join(doc.chunks))["models"]["m"]["points"]) == 3

    asyncio.run(scenario())
