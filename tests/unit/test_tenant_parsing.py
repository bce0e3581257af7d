"""Hostile input to the tenant and usage parsers (hypothesis): Authorization values, usage
times, tenant names and quotas are accepted or refused with a bounded message, never a crash."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from adapters.api.control import _instant
from adapters.gateway.tenancy import TenantGate, token_hash
from controlplane.errors import InvalidSpec
from controlplane.replicas import ModelRouting, TenantAccess
from controlplane.tenants import Quota, TenantCreate, check_tenant_name


@given(st.one_of(st.none(), st.binary(max_size=2000), st.text(max_size=600)))
def test_any_authorization_value_hashes_or_is_malformed(value: bytes | str | None) -> None:
    got = token_hash(value)
    if value is None:
        assert got is None
    else:
        assert got == "" or (isinstance(got, str) and len(got) == 64)


def test_bearer_tokens_hash_to_what_the_store_keeps() -> None:
    digest = hashlib.sha256(b"tft_abc").hexdigest()
    assert token_hash(b"Bearer tft_abc") == digest
    assert token_hash("bearer   tft_abc  ") == digest
    assert token_hash(b"Basic dXNlcg==") == ""
    assert token_hash(b"Bearer ") == ""
    assert token_hash(b"Bearer " + b"x" * 600) == ""  # longer than any token we issue


@given(st.text(max_size=80))
def test_usage_times_parse_or_name_the_field(raw: str) -> None:
    try:
        value = _instant(raw, "from", 123.0)
    except InvalidSpec as exc:
        assert exc.problems[0].field == "from" and len(str(exc)) < 300
    else:
        assert 0 <= value < 1e11


@given(st.text(max_size=100))
def test_tenant_names_are_dns_labels_or_refused(name: str) -> None:
    try:
        check_tenant_name(name)
    except ValueError:
        return
    assert name == name.lower() and len(name) <= 32 and "." not in name


@given(
    st.dictionaries(
        st.sampled_from(["memory_bytes", "replicas", "models", "requests_per_s", "burst", "x"]),
        st.one_of(st.integers(-5, 1 << 62), st.floats(), st.text(max_size=10), st.none()),
    )
)
def test_quotas_validate_or_name_the_field(quota: dict[str, object]) -> None:
    try:
        TenantCreate.model_validate({"name": "t", "quota": quota})
    except ValidationError as exc:
        assert all(e["loc"][0] == "quota" for e in exc.errors())


def test_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    gate = TenantGate(
        True,
        type("L", (), {"tenant_by_token": lambda self, d: TenantAccess("t", 2.0, 3)})(),
        clock=lambda: now[0],
    )
    rt = ModelRouting(name="t.m", tenant="t")
    assert [gate.check("t.m", rt, "h") for _ in range(3)] == [None, None, None]
    denied = gate.check("t.m", rt, "h")
    assert denied is not None and denied.status == 429 and denied.retry_after_s == 1
    now[0] = 0.5  # one token back at 2/s
    assert gate.check("t.m", rt, "h") is None
    assert gate.check("t.m", rt, "h") is not None
    now[0] = 100.0  # never more than the burst
    assert [gate.check("t.m", rt, "h") for _ in range(4)].count(None) == 3
    assert Quota(requests_per_s=2, burst=3).burst == 3
    with pytest.raises(ValidationError):
        Quota(requests_per_s=float("nan"))
