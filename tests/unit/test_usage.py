"""Chargeback accounting, pure: fake time, exact numbers."""

from __future__ import annotations

import pytest

from controlplane.usage import (
    Accountant,
    Counters,
    GroupBy,
    ModelMeta,
    Observation,
    ReplicaObs,
    aggregate,
    merge,
)

MiB = 1 << 20
META = {
    "a.m": ModelMeta("a", {"team": "search", "cost_center": "42"}),
    "b.m": ModelMeta("b", {"team": "ads"}),
    "free": ModelMeta(None, {}),
}


def _obs(now, ready, gpus=(), counters=None):
    return Observation(now, [ReplicaObs(*r) for r in ready], META, frozenset(gpus), counters)


def test_replica_seconds_memory_and_minute_buckets_are_exact() -> None:
    acc = Accountant()
    ready = [("a.m", "s1", 100 * MiB), ("a.m", "s2", 100 * MiB), ("free", "s1", 50 * MiB)]
    t = 1_000_040.0  # 20 s into the minute that starts at 1_000_020
    for k in range(0, 91):  # 90 s of observations, one per second
        acc.observe(_obs(t + k, ready))
    rows = {(r.bucket, r.model): r for r in acc.drain()}
    assert rows[(1_000_020, "a.m")].replica_s == pytest.approx(2 * 40)
    assert rows[(1_000_080, "a.m")].replica_s == pytest.approx(2 * 50)
    assert rows[(1_000_020, "free")].memory_byte_s == pytest.approx(50 * MiB * 40)
    assert all(r.gpu_s is None for r in rows.values())  # no GPU server: unknown, not zero
    report = {d["tenant"]: d for d in aggregate(rows.values(), GroupBy.TENANT)}
    assert report["a"]["replica_s"] == 180.0 and report["(none)"]["replica_s"] == 90.0
    assert report["a"]["memory_gib_h"] == pytest.approx(200 / 1024 * 90 / 3600, abs=1e-6)
    assert acc.drain() == []  # drained


def test_gpu_seconds_split_by_memory_share_and_gaps_are_not_charged() -> None:
    acc = Accountant(max_gap_s=30)
    ready = [("a.m", "g", 300 * MiB), ("b.m", "g", 100 * MiB), ("free", "c", 10 * MiB)]
    acc.observe(_obs(0.0, ready, gpus={"g"}))
    acc.observe(_obs(10.0, ready, gpus={"g"}))
    acc.observe(_obs(100.0, ready, gpus={"g"}))  # 90 s gap: the control plane was down
    acc.observe(_obs(110.0, ready, gpus={"g"}))
    by_model = {d["model"]: d for d in aggregate(acc.drain(), GroupBy.MODEL)}
    assert by_model["a.m"]["gpu_s"] == pytest.approx(20 * 0.75)
    assert by_model["b.m"]["gpu_s"] == pytest.approx(20 * 0.25)
    assert by_model["free"]["gpu_s"] is None and by_model["free"]["replica_s"] == 20


def test_a_replica_is_charged_only_while_ready_at_both_ends() -> None:
    acc = Accountant()
    acc.observe(_obs(0.0, [("a.m", "s1", MiB)]))
    acc.observe(_obs(5.0, [("a.m", "s1", MiB), ("b.m", "s1", MiB)]))
    acc.observe(_obs(9.0, [("b.m", "s1", MiB)]))
    got = {d["model"]: d["replica_s"] for d in aggregate(acc.drain(), GroupBy.MODEL)}
    assert got == {"a.m": 5.0, "b.m": 4.0}


def test_request_and_compute_counters_are_deltas_and_survive_a_server_restart() -> None:
    acc = Accountant()
    c = lambda req, us: {"s1": {"a.m": Counters(req, us)}}  # noqa: E731
    acc.observe(_obs(0.0, [], counters=c(100, 5_000_000)))  # baseline: not charged
    acc.observe(_obs(1.0, [], counters=c(150, 6_000_000)))
    acc.observe(_obs(2.0, [], counters=c(20, 400_000)))  # restarted: counters began anew
    (row,) = aggregate(acc.drain(), GroupBy.MODEL)
    assert row["requests"] == 70 and row["compute_s"] == pytest.approx(1.4)


def test_group_by_tag_counts_a_model_in_each_of_its_tags() -> None:
    acc = Accountant()
    ready = [("a.m", "s", MiB), ("b.m", "s", MiB), ("free", "s", MiB)]
    acc.observe(_obs(0.0, ready))
    acc.observe(_obs(10.0, ready))
    stored = acc.drain()
    acc.observe(_obs(20.0, ready))
    rows = merge(stored, acc.pending())
    got = {d["tag"]: d["replica_s"] for d in aggregate(rows, GroupBy.TAG)}
    assert got == {
        "team=search": 20.0,
        "cost_center=42": 20.0,
        "team=ads": 20.0,
        "(untagged)": 20.0,
    }
