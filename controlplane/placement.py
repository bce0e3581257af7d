"""Placement: which models go on which servers, as a pure function of a snapshot.

`plan(snapshot)` keeps what is already placed (a warm model is never moved to gain a few
bytes), drops replicas on servers that are gone, and places what is missing in decreasing order
(larger and higher-priority replicas first), never two replicas of one model on one server,
never past a server's capacity. The snapshot's strategy picks the server: PACK (best-fit) takes
the fitting live server with the least room left after it, so empty servers stay empty and an
elastic fleet can stop them; SPREAD (worst-fit) takes the one with the most free memory, so a
fixed-size fleet shares GPU time and cold loads across all its servers. When nothing fits it evicts idle replicas (above their model's warm floor and its
current target) least-recently-used first, and only when that makes room. Every decision that
leaves something unplaced says why.

Tenant quotas (replicas, memory bytes) cap what a tenant's models may hold fleet-wide: its
replicas are ranked by priority (warm floors first within a priority), admitted while they fit
the quota, and the rest are left unplaced (or unloaded, when a quota shrank) with the quota in
the reason.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True)
class ServerView:
    id: str
    capacity_bytes: int
    live: bool = True
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelView:
    name: str
    memory_bytes: int
    min_replicas: int = 0
    max_replicas: int = 1
    wanted: int = 0  # replicas demand asks for now (autoscaler / ensure); floor applies anyway
    priority: int = 0
    last_used: float = 0.0  # seconds since the epoch; 0 = never
    blocked: bool = False  # failed recently: place no new replica (backoff)
    server_labels: Mapping[str, str] = field(default_factory=dict)
    shed_surplus: bool = False  # load-driven: replicas above the target are drained and unloaded
    tenant: str | None = None  # the owner, whose quota (if any) caps its replicas

    @property
    def target(self) -> int:
        if self.blocked:
            return 0
        return min(self.max_replicas, max(self.min_replicas, self.wanted))


@dataclass(frozen=True)
class QuotaView:
    """A tenant's caps, fleet-wide; None is unlimited."""

    replicas: int | None = None
    memory_bytes: int | None = None


class Placement(StrEnum):
    """Where `plan` puts a new replica among the live servers it fits on."""

    PACK = "pack"  # best-fit: the least free memory left after it
    SPREAD = "spread"  # worst-fit: the most free memory


class PlacementSetting(StrEnum):
    """The configured strategy: AUTO spreads on a fleet that cannot change size and packs on
    one the autopilot grows and shrinks (shrinking stops an empty top server; spreading would
    never leave one empty)."""

    AUTO = "auto"
    PACK = "pack"
    SPREAD = "spread"

    def resolve(self, elastic: bool) -> Placement:
        if self is PlacementSetting.AUTO:
            return Placement.PACK if elastic else Placement.SPREAD
        return Placement(self.value)


@dataclass(frozen=True)
class Snapshot:
    servers: tuple[ServerView, ...]
    models: tuple[ModelView, ...]
    placement: Mapping[str, tuple[str, ...]]  # model -> servers holding (or loading) it
    now: float = 0.0
    quotas: Mapping[str, QuotaView] = field(default_factory=dict)  # tenant -> caps
    strategy: Placement = Placement.PACK


class ActionKind(StrEnum):
    LOAD = "load"
    UNLOAD = "unload"


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    model: str
    server: str
    reason: str
    evicts: bool = False  # an unload that takes a warm replica away to make room
    drain: bool = False  # scale-in: stop routing to it, let requests in flight finish, unload

    def __str__(self) -> str:
        return f"{self.kind.value} {self.model} on {self.server}: {self.reason}"


@dataclass(frozen=True)
class Plan:
    placement: Mapping[str, tuple[str, ...]]
    actions: tuple[Action, ...]
    unplaced: Mapping[str, str]  # model -> why (some of) its replicas could not be placed
    used_bytes: Mapping[str, int]
    quota_capped: Mapping[str, int] = field(default_factory=dict)  # model -> replicas allowed

    @property
    def empty(self) -> bool:
        return not self.actions

    def describe(self) -> str:
        lines = [str(a) for a in self.actions]
        lines += [f"unplaced {m}: {why}" for m, why in sorted(self.unplaced.items())]
        return "\n".join(lines) or "nothing to do"


class _Free:
    """Live servers ordered by free bytes, for O(log n) best-fit and worst-fit lookups."""

    def __init__(self, free: dict[str, int], biggest: int) -> None:
        self.free = free
        self.biggest = biggest  # the largest capacity among these servers
        self._order = sorted((b, s) for s, b in free.items())

    def take(self, server: str, amount: int) -> None:
        self._move(server, self.free[server] - amount)

    def give(self, server: str, amount: int) -> None:
        self._move(server, self.free[server] + amount)

    def _move(self, server: str, new: int) -> None:
        old = self.free[server]
        i = bisect.bisect_left(self._order, (old, server))
        del self._order[i]
        bisect.insort(self._order, (new, server))
        self.free[server] = new

    def best_fit(self, need: int, exclude: set[str], ok: ServerFilter) -> str | None:
        order = self._order
        for j in range(bisect.bisect_left(order, (need, "")), len(order)):
            server = order[j][1]
            if server not in exclude and ok(server):
                return server
        return None

    def worst_fit(self, need: int, exclude: set[str], ok: ServerFilter) -> str | None:
        """The allowed server with the most free bytes, if that is at least `need`; ties go to
        the highest server id (the order's end), deterministically."""
        order = self._order
        for j in range(len(order) - 1, -1, -1):
            b, server = order[j]
            if b < need:
                return None
            if server not in exclude and ok(server):
                return server
        return None

    def largest(self, exclude: set[str] | None = None) -> int:
        for b, server in reversed(self._order):
            if not exclude or server not in exclude:
                return b
        return 0


class ServerFilter:
    def __init__(self, servers: Mapping[str, ServerView], labels: Mapping[str, str]) -> None:
        self._servers = servers
        self._labels = labels

    def __call__(self, server: str) -> bool:
        if not self._labels:
            return True
        have = self._servers[server].labels
        return all(have.get(k) == v for k, v in self._labels.items())


def plan(snap: Snapshot) -> Plan:
    servers = {s.id: s for s in snap.servers}
    live = {s.id for s in snap.servers if s.live}
    models = {m.name: m for m in snap.models}
    actions: list[Action] = []
    unplaced: dict[str, str] = {}

    # 1. Keep what stands: drop replicas of unknown models, on gone servers, or above max.
    kept: dict[str, list[str]] = {}
    for name, holders in snap.placement.items():
        model = models.get(name)
        if (
            model is not None
            and len(holders) <= model.max_replicas
            and live.issuperset(holders)
            and (len(holders) == 1 or len(set(holders)) == len(holders))
        ):
            kept[name] = list(holders)  # the common case: everything stands
            continue
        for server in holders:
            if model is None:
                if server in live:
                    actions.append(
                        Action(ActionKind.UNLOAD, name, server, "model is not registered")
                    )
                continue
            if server not in live:
                continue  # the server is gone; its replica is re-placed below
            replicas = kept.setdefault(name, [])
            if server in replicas:
                continue
            if len(replicas) >= model.max_replicas:
                actions.append(
                    Action(
                        ActionKind.UNLOAD, name, server, f"above max_replicas={model.max_replicas}"
                    )
                )
                continue
            replicas.append(server)

    # 1b. Load-driven models shed replicas above their target: the highest-ordinal servers
    #     first (the ones a shrinking fleet removes), drained before they are unloaded.
    order = {s.id: i for i, s in enumerate(snap.servers)}
    for model in snap.models:
        holding = kept.get(model.name)
        want = min(model.max_replicas, max(model.min_replicas, model.wanted))
        if not model.shed_surplus or not holding or len(holding) <= want:
            continue
        holding.sort(key=lambda s: order.get(s, -1))
        while len(holding) > want:
            server = holding.pop()
            actions.append(
                Action(
                    ActionKind.UNLOAD, model.name, server, f"scale-in ({want} wanted)", drain=True
                )
            )

    target = {
        m.name: 0 if m.blocked else min(m.max_replicas, max(m.min_replicas, m.wanted))
        for m in snap.models
    }  # ModelView.target, inlined: this runs for every model on every plan

    # 1c. Tenant quotas: cap targets, and unload what a shrunken quota no longer allows.
    capped: dict[str, int] = {}
    if snap.quotas:
        capped = _apply_quotas(snap, kept, target, unplaced)
        for name, allowed in capped.items():
            holding = kept.get(name, [])
            holding.sort(key=lambda s: order.get(s, -1))
            while len(holding) > allowed:
                server = holding.pop()
                actions.append(Action(ActionKind.UNLOAD, name, server, unplaced[name], drain=True))

    used = dict.fromkeys(live, 0)
    on_server: dict[str, list[str]] = {s: [] for s in live}
    for name, replicas in kept.items():
        mem = models[name].memory_bytes
        for server in replicas:
            used[server] += mem
            on_server[server].append(name)

    free = _Free(
        {s: servers[s].capacity_bytes - used[s] for s in live},
        max((servers[s].capacity_bytes for s in live), default=0),
    )

    biggest = free.biggest

    def evictable(victim: str, for_model: ModelView) -> bool:
        count = len(kept[victim])
        v = models[victim]
        if count <= v.min_replicas:
            return False  # the warm floor is never evicted
        if count > target[victim]:
            return True  # idle surplus: kept warm only while nobody needs the room
        return v.priority < for_model.priority

    def evict(server: str, victim: str, reason: str) -> None:
        kept[victim].remove(server)
        on_server[server].remove(victim)
        free.give(server, models[victim].memory_bytes)
        used[server] -= models[victim].memory_bytes
        actions.append(Action(ActionKind.UNLOAD, victim, server, reason, evicts=True))

    # 2. A server over capacity (a footprint grew once measured) sheds idle replicas.
    for server in sorted(live):
        if free.free[server] >= 0:
            continue
        # Idle surplus first (dropping it needs no reload elsewhere), then lower priority, LRU.
        victims = sorted(
            (n for n in on_server[server] if len(kept[n]) > models[n].min_replicas),
            key=lambda n: (
                len(kept[n]) <= models[n].target,
                models[n].priority,
                models[n].last_used,
            ),
        )
        for victim in victims:
            if free.free[server] >= 0:
                break
            evict(server, victim, "server over capacity after footprints were measured")

    # 3. Place missing replicas in decreasing order (priority, floor, size), best-fit (PACK)
    #    or worst-fit (SPREAD).
    needs: list[tuple[ModelView, int, bool]] = []
    for model in snap.models:
        want = target[model.name]
        if want:
            for k in range(len(kept.get(model.name, ())), want):
                needs.append((model, k, k < model.min_replicas))
    needs.sort(key=lambda t: (-t[0].priority, not t[2], -t[0].memory_bytes, t[0].name, t[1]))

    # Needs come in priority order, so what later needs may evict only shrinks, and free room
    # only shrinks until an eviction succeeds: a size that found no room will not find it later
    # either. Remembering that keeps an overcommitted fleet cheap to plan.
    hopeless: dict[tuple[int, tuple[tuple[str, str], ...]], int] = {}
    fit = free.worst_fit if snap.strategy is Placement.SPREAD else free.best_fit
    for model, _k, is_floor in needs:
        replicas = kept.setdefault(model.name, [])
        taken = set(replicas)
        ok = ServerFilter(servers, model.server_labels)
        memo_key = (model.priority, tuple(sorted(model.server_labels.items())))
        chosen = fit(model.memory_bytes, taken, ok)
        # (A failure recorded without exclusions also holds for a model that must avoid the
        # servers its replicas are on; failures are recorded only without exclusions.)
        if chosen is None and (
            model.memory_bytes > biggest or model.memory_bytes >= hopeless.get(memo_key, 1 << 62)
        ):
            unplaced[model.name] = _why(
                model, servers, live, taken, ok, free, is_floor, snap.strategy
            )
            continue
        if chosen is None:
            chosen = _make_room(model, live, taken, ok, free, on_server, models, evictable, evict)
            if chosen is not None:
                hopeless.clear()  # an eviction freed room: earlier failures may fit now
            elif not taken:
                hopeless[memo_key] = min(hopeless.get(memo_key, 1 << 62), model.memory_bytes)
        if chosen is None:
            if model.name not in unplaced:
                unplaced[model.name] = _why(
                    model, servers, live, taken, ok, free, is_floor, snap.strategy
                )
            continue
        replicas.append(chosen)
        on_server[chosen].append(model.name)
        free.take(chosen, model.memory_bytes)
        used[chosen] += model.memory_bytes
        actions.append(
            Action(
                ActionKind.LOAD,
                model.name,
                chosen,
                "warm floor" if is_floor else f"demand ({model.target} wanted)",
            )
        )

    placement = {n: tuple(r) for n, r in kept.items() if r}
    return Plan(
        placement=placement,
        actions=tuple(actions),
        unplaced=unplaced,
        used_bytes=used,
        quota_capped=capped,
    )


def _apply_quotas(
    snap: Snapshot, kept: Mapping[str, list[str]], target: dict[str, int], unplaced: dict[str, str]
) -> dict[str, int]:
    """Lower `target` of models whose tenant is over quota; return {model: replicas allowed}
    for those, with the reason in `unplaced`. Higher priority first, warm floors before demand
    within a priority, replicas already placed before new ones, then by name: so the lowest-
    priority replicas are the ones left out, and a plan is stable from tick to tick."""
    by_tenant: dict[str, list[ModelView]] = {}
    for model in snap.models:
        if model.tenant is not None and model.tenant in snap.quotas:
            by_tenant.setdefault(model.tenant, []).append(model)
    capped: dict[str, int] = {}
    for tenant, models in by_tenant.items():
        quota = snap.quotas[tenant]
        slots = []
        for m in models:
            held = len(kept.get(m.name, ()))
            for k in range(max(target[m.name], held)):
                floor = k < m.min_replicas
                slots.append((-m.priority, not floor, k >= held, m.name, k, m))
        slots.sort(key=lambda t: t[:5])
        replicas = memory = 0
        allowed = dict.fromkeys((m.name for m in models), 0)
        for *_, m in slots:
            fits_replicas = quota.replicas is None or replicas + 1 <= quota.replicas
            fits_memory = (
                quota.memory_bytes is None or memory + m.memory_bytes <= quota.memory_bytes
            )
            if fits_replicas and fits_memory:
                replicas += 1
                memory += m.memory_bytes
                allowed[m.name] += 1
        for m in models:
            want = max(target[m.name], len(kept.get(m.name, ())))
            if allowed[m.name] >= want:
                continue
            capped[m.name] = allowed[m.name]
            target[m.name] = min(target[m.name], allowed[m.name])
            limits = []
            if quota.replicas is not None:
                limits.append(f"replicas {replicas}/{quota.replicas}")
            if quota.memory_bytes is not None:
                limits.append(f"memory {memory}/{quota.memory_bytes} bytes")
            unplaced[m.name] = (
                f"tenant {tenant!r} quota: {allowed[m.name]} of {want} replica(s) allowed "
                f"(in use: {', '.join(limits)}; lower-priority replicas are left out first); "
                "raise the quota or this model's priority"
            )
    return capped


def _make_room(
    model: ModelView,
    live: set[str],
    holders: set[str],
    ok: ServerFilter,
    free: _Free,
    on_server: dict[str, list[str]],
    models: Mapping[str, ModelView],
    evictable: Callable[[str, ModelView], bool],
    evict: Callable[[str, str, str], None],
) -> str | None:
    """Pick the server where evicting LRU idle replicas frees room with the fewest bytes."""
    best: tuple[int, str, list[str]] | None = None
    for server in live:
        if server in holders or not ok(server):
            continue
        room = free.free[server]
        victims = [n for n in on_server[server] if evictable(n, model)]
        if room + sum(models[n].memory_bytes for n in victims) < model.memory_bytes:
            continue
        candidates = sorted(victims, key=lambda n: (models[n].last_used, models[n].priority, n))
        chosen: list[str] = []
        for victim in candidates:
            if room >= model.memory_bytes:
                break
            chosen.append(victim)
            room += models[victim].memory_bytes
        if room >= model.memory_bytes and chosen:
            evicted_bytes = sum(models[v].memory_bytes for v in chosen)
            if best is None or (evicted_bytes, server) < (best[0], best[1]):
                best = (evicted_bytes, server, chosen)
    if best is None:
        return None
    _, server, chosen = best
    for victim in chosen:
        evict(server, victim, f"evicted (least recently used) to make room for {model.name}")
    return server


def _why(
    model: ModelView,
    servers: Mapping[str, ServerView],
    live: set[str],
    holders: set[str],
    ok: ServerFilter,
    free: _Free,
    is_floor: bool,
    strategy: Placement = Placement.PACK,
) -> str:
    what = "warm-floor replica" if is_floor else "replica"
    if not live:
        return f"no live server for a {what}"
    if not model.server_labels and len(holders) < len(live):
        # Every live server but the holders is eligible: aggregates instead of a scan.
        biggest = free.biggest
        room = free.largest(exclude=holders)
    else:
        eligible = [s for s in live if ok(s)]
        if not eligible:
            return f"no live server has labels {dict(model.server_labels)}"
        others = [s for s in eligible if s not in holders]
        if not others:
            return (
                f"{len(holders)} replica(s) already use every eligible server; one replica per "
                "server (anti-affinity)"
            )
        biggest = max(servers[s].capacity_bytes for s in others)
        room = max(free.free[s] for s in others)
    if model.memory_bytes > biggest:
        return f"needs {model.memory_bytes} bytes; the largest eligible server has {biggest}"
    why = (
        f"needs {model.memory_bytes} bytes for a {what}; the most free on an eligible server "
        f"is {room} and nothing there may be evicted (warm floors and busier or "
        "higher-priority models stay)"
    )
    if strategy is Placement.SPREAD:
        # Spreading splits free memory across servers; packing keeps it together for a large
        # model that comes later. Say so: it is the one thing the user can change here.
        why += "; placement is spread, which splits free memory across servers (pack keeps it)"
    return why
