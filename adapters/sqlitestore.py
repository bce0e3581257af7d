"""SQLite `ModelStore`: WAL journal, `synchronous=FULL`, so an acknowledged registration
survives a SIGKILL of the process (and a power cut, as far as the disk keeps its promises).

sqlite3 is synchronous; each call runs on a single worker thread that owns the connection, so
the event loop never blocks on disk and no connection is shared across threads.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import sqlite3
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from controlplane.errors import Conflict, NotFound
from controlplane.spec import ModelSpec
from controlplane.store import Footprint, ModelRecord
from controlplane.tenants import Quota, Tenant
from controlplane.usage import UsageRow

T = TypeVar("T")
log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    name TEXT PRIMARY KEY,
    generation INTEGER NOT NULL,
    spec_json TEXT NOT NULL,
    config_pbtxt TEXT NOT NULL,
    config_json TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
-- The last generation of each deleted name: registered again, it continues from there.
CREATE TABLE IF NOT EXISTS retired (
    name TEXT PRIMARY KEY,
    generation INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS footprints (
    model TEXT PRIMARY KEY,
    memory_bytes INTEGER NOT NULL,
    source TEXT NOT NULL,
    measured_at REAL NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS usage (
    bucket INTEGER NOT NULL,
    model TEXT NOT NULL,
    tenant TEXT,
    tags_json TEXT NOT NULL,
    replica_s REAL NOT NULL,
    memory_byte_s REAL NOT NULL,
    gpu_s REAL,
    requests REAL NOT NULL,
    compute_us REAL NOT NULL,
    PRIMARY KEY (bucket, model)
);
CREATE INDEX IF NOT EXISTS usage_by_tenant ON usage (tenant, bucket);
CREATE TABLE IF NOT EXISTS tenants (
    name TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    quota_json TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL
);
"""

# Columns added after a table first shipped: (table, column, declaration). Applied at open
# when missing, so a store written by an older tritonfleet opens unchanged.
_MIGRATIONS = (("models", "tenant", "TEXT"),)
_MODEL_COLUMNS = (
    "name, generation, spec_json, config_pbtxt, config_json, created_at, updated_at, tenant"
)


def _row(row: tuple[Any, ...]) -> ModelRecord:
    name, generation, spec_json, pbtxt, cfg_json, created, updated, tenant = row
    return ModelRecord(
        name=name,
        generation=generation,
        spec=ModelSpec.model_validate(json.loads(spec_json)),
        config_pbtxt=pbtxt,
        config_json=cfg_json,
        created_at=created,
        updated_at=updated,
        tenant=tenant,
    )


def _tenant(row: tuple[Any, ...]) -> Tenant:
    name, digest, quota_json, created, revoked = row
    return Tenant(name, digest, Quota.model_validate_json(quota_json), created, revoked)


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None
        # Parsed records by name, reused while their (generation, updated_at) is unchanged:
        # the reconciler lists every tick, and re-validating every spec would dominate.
        self._parsed: dict[str, tuple[tuple[int, float], ModelRecord]] = {}

    async def open(self) -> SqliteStore:
        await self._run(self._open)
        return self

    def _open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self._path), isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(_SCHEMA)
        for table, column, decl in _MIGRATIONS:
            have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
        self._conn = conn

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("SqliteStore used before open()")
        return self._conn

    async def get(self, name: str) -> ModelRecord:
        def q() -> ModelRecord:
            row = self._db.execute(
                f"SELECT {_MODEL_COLUMNS} FROM models WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                raise NotFound("model", name)
            return _row(row)

        return await self._run(q)

    async def list(self) -> list[ModelRecord]:
        def q() -> list[ModelRecord]:
            versions = self._db.execute(
                "SELECT name, generation, updated_at FROM models ORDER BY name"
            ).fetchall()
            out = []
            for name, generation, updated in versions:
                cached = self._parsed.get(name)
                if cached is None or cached[0] != (generation, updated):
                    row = self._db.execute(
                        f"SELECT {_MODEL_COLUMNS} FROM models WHERE name = ?", (name,)
                    ).fetchone()
                    if row is None:
                        continue  # deleted between the two reads
                    try:
                        cached = ((row[1], row[6]), _row(row))
                    except ValidationError as exc:
                        # One unreadable row (say, validation tightened since it was stored)
                        # must not take the registry down; it is reported and skipped.
                        log.error("stored spec of model %r no longer validates: %s", name, exc)
                        continue
                    self._parsed[name] = cached
                out.append(cached[1])
            for gone in set(self._parsed) - {v[0] for v in versions}:
                del self._parsed[gone]
            return out

        return await self._run(q)

    async def create(self, record: ModelRecord) -> ModelRecord:
        def q() -> ModelRecord:
            row = self._db.execute(
                "SELECT generation FROM retired WHERE name = ?", (record.name,)
            ).fetchone()
            stored = record
            if row is not None and record.generation <= row[0]:
                stored = replace(record, generation=row[0] + 1)
            try:
                self._db.execute(
                    f"INSERT INTO models ({_MODEL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        stored.name,
                        stored.generation,
                        record.spec.model_dump_json(),
                        record.config_pbtxt,
                        record.config_json,
                        record.created_at,
                        record.updated_at,
                        record.tenant,
                    ),
                )
            except sqlite3.IntegrityError as exc:
                raise Conflict(
                    f"model {record.name!r} is already registered; use PUT to change it"
                ) from exc
            return stored

        return await self._run(q)

    async def update(self, record: ModelRecord, expected_generation: int) -> ModelRecord:
        def q() -> ModelRecord:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                cur = self._db.execute(
                    "UPDATE models SET generation = ?, spec_json = ?, config_pbtxt = ?, "
                    "config_json = ?, updated_at = ? WHERE name = ? AND generation = ?",
                    (
                        record.generation,
                        record.spec.model_dump_json(),
                        record.config_pbtxt,
                        record.config_json,
                        record.updated_at,
                        record.name,
                        expected_generation,
                    ),
                )
                if cur.rowcount == 0:
                    row = self._db.execute(
                        "SELECT generation FROM models WHERE name = ?", (record.name,)
                    ).fetchone()
                    if row is None:
                        raise NotFound("model", record.name)
                    raise Conflict(
                        f"model {record.name!r} changed meanwhile (generation {row[0]}); retry"
                    )
                # A new generation is measured anew.
                self._db.execute("DELETE FROM footprints WHERE model = ?", (record.name,))
                row = self._db.execute(
                    f"SELECT {_MODEL_COLUMNS} FROM models WHERE name = ?", (record.name,)
                ).fetchone()
            return _row(row)

        return await self._run(q)

    async def delete(self, name: str) -> ModelRecord:
        def q() -> ModelRecord:
            row = self._db.execute(
                f"SELECT {_MODEL_COLUMNS} FROM models WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                raise NotFound("model", name)
            with self._db:
                self._db.execute("BEGIN")
                self._db.execute("DELETE FROM models WHERE name = ?", (name,))
                self._db.execute("INSERT OR REPLACE INTO retired VALUES (?, ?)", (name, row[1]))
                self._db.execute("DELETE FROM footprints WHERE model = ?", (name,))
            return _row(row)

        return await self._run(q)

    async def retired(self, names: Collection[str]) -> set[str]:
        wanted = sorted(set(names))[:500]  # what one server has loaded: a bounded few

        def q() -> set[str]:
            if not wanted:
                return set()
            marks = ",".join("?" * len(wanted))
            rows = self._db.execute(
                f"SELECT name FROM retired WHERE name IN ({marks}) "
                "AND name NOT IN (SELECT name FROM models)",
                wanted,
            ).fetchall()
            return {r[0] for r in rows}

        return await self._run(q)

    async def put_footprint(self, footprint: Footprint) -> bool:
        # Only for a model that still exists at the generation it was measured for: a late
        # measurement must not resurrect a deleted model's size or outlive a PUT.
        def q() -> bool:
            cur = self._db.execute(
                "INSERT OR REPLACE INTO footprints "
                "SELECT ?, ?, ?, ?, ? WHERE EXISTS "
                "(SELECT 1 FROM models WHERE name = ? AND generation = ?)",
                (
                    footprint.model,
                    footprint.memory_bytes,
                    footprint.source,
                    footprint.measured_at,
                    footprint.generation,
                    footprint.model,
                    footprint.generation,
                ),
            )
            return cur.rowcount > 0

        return await self._run(q)

    async def footprints(self) -> dict[str, Footprint]:
        return await self._run(
            lambda: {
                r[0]: Footprint(
                    model=r[0], memory_bytes=r[1], source=r[2], measured_at=r[3], generation=r[4]
                )
                for r in self._db.execute("SELECT * FROM footprints")
            }
        )

    async def tenants(self) -> builtins.list[Tenant]:
        return await self._run(
            lambda: [
                _tenant(r)
                for r in self._db.execute(
                    "SELECT name, token_sha256, quota_json, created_at, revoked_at FROM tenants "
                    "ORDER BY name"
                )
            ]
        )

    async def put_tenant(self, tenant: Tenant, *, create: bool) -> Tenant:
        def q() -> Tenant:
            verb = "INSERT" if create else "INSERT OR REPLACE"
            try:
                self._db.execute(
                    f"{verb} INTO tenants VALUES (?, ?, ?, ?, ?)",
                    (
                        tenant.name,
                        tenant.token_sha256,
                        tenant.quota.model_dump_json(),
                        tenant.created_at,
                        tenant.revoked_at,
                    ),
                )
            except sqlite3.IntegrityError as exc:
                raise Conflict(
                    f"tenant {tenant.name!r} exists; revoke or rotate its token instead"
                ) from exc
            return tenant

        return await self._run(q)

    async def add_usage(self, rows: Sequence[UsageRow]) -> None:
        """Add `rows` to what is stored for their (bucket, model), in one transaction."""

        def q() -> None:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    "INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (bucket, model) DO UPDATE SET "
                    "tenant = excluded.tenant, tags_json = excluded.tags_json, "
                    "replica_s = replica_s + excluded.replica_s, "
                    "memory_byte_s = memory_byte_s + excluded.memory_byte_s, "
                    "gpu_s = CASE WHEN excluded.gpu_s IS NULL THEN gpu_s "
                    "ELSE coalesce(gpu_s, 0) + excluded.gpu_s END, "
                    "requests = requests + excluded.requests, "
                    "compute_us = compute_us + excluded.compute_us",
                    [
                        (
                            r.bucket,
                            r.model,
                            r.tenant,
                            json.dumps(dict(r.tags), sort_keys=True),
                            r.replica_s,
                            r.memory_byte_s,
                            r.gpu_s,
                            r.requests,
                            r.compute_us,
                        )
                        for r in rows
                    ],
                )

        if rows:
            await self._run(q)

    async def usage(
        self, from_s: float, to_s: float, tenant: str | None = None
    ) -> builtins.list[UsageRow]:
        """Rows of the buckets that start in [from_s, to_s); only `tenant`'s when given."""

        def q() -> list[UsageRow]:
            sql = (
                "SELECT bucket, model, tenant, tags_json, replica_s, memory_byte_s, gpu_s, "
                "requests, compute_us FROM usage WHERE bucket >= ? AND bucket < ?"
            )
            params: tuple[Any, ...] = (from_s, to_s)
            if tenant is not None:
                sql += " AND tenant = ?"
                params += (tenant,)
            return [
                UsageRow(b, m, t, json.loads(tags), rs, mem, gpu, req, comp)
                for b, m, t, tags, rs, mem, gpu, req, comp in self._db.execute(sql, params)
            ]

        return await self._run(q)

    async def prune_usage(self, before_s: float) -> int:
        return await self._run(
            lambda: self._db.execute("DELETE FROM usage WHERE bucket < ?", (before_s,)).rowcount
        )

    async def close(self) -> None:
        def q() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await self._run(q)
        self._pool.shutdown(wait=True)
