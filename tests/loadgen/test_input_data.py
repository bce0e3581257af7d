"""`--input-data FILE`: any JSON a user writes gives input sets or a UsageError naming the flag."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loadgen.errors import UsageError
from loadgen.inputs import ModelSignature, TensorSpec, build_sets

SIG = ModelSignature(
    "m",
    "",
    4,
    (TensorSpec("IN", "FP32", (-1, 2)), TensorSpec("S", "BYTES", (-1, 1))),
    (TensorSpec("OUT", "FP32", (-1, 2)),),
)


def _sets(tmp_path: Path, doc: Any, batch: int = 2) -> list[dict[str, Any]]:
    f = tmp_path / "data.json"
    f.write_text(json.dumps(doc))
    return build_sets(
        SIG, batch_size=batch, shapes={}, count=1, rng=np.random.default_rng(0), data_file=f
    )


def test_a_well_formed_file_gives_batched_arrays(tmp_path: Path) -> None:
    (s,) = _sets(tmp_path, {"data": [{"IN": [1, 2], "S": {"content": ["a"], "shape": [1]}}]})
    assert s["IN"].shape == (2, 2) and s["IN"].dtype == np.float32
    assert s["S"].shape == (2, 1) and s["S"][0, 0] == b"a"


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        ({"data": [{"IN": {"shape": [2]}, "S": ["a"]}]}, "data[0].IN must be a list"),
        ({"data": [7]}, "data[0] must be an object"),
        ({"data": [{"IN": ["x", "y"], "S": ["a"]}]}, "not FP32"),
        ({"data": [{"IN": {"content": [1, 2], "shape": "2"}, "S": ["a"]}]}, "shape must be"),
        ({"data": [{"IN": {"content": [1, 2], "shape": [-1]}, "S": ["a"]}]}, "shape must be"),
        ({"data": [{"IN": [1, 2, 3], "S": ["a"]}]}, "has 3 values"),
        ({"data": [{"S": ["a"]}]}, "lacks input IN"),
        ({"data": []}, "expected"),
    ],
)
def test_malformed_files_name_the_flag_and_the_place(tmp_path: Path, doc: Any, says: str) -> None:
    with pytest.raises(UsageError) as err:
        _sets(tmp_path, doc)
    assert "--input-data" in str(err.value) and says in str(err.value)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["IN", "S", "data", "content", "shape", "x"]), inner, max_size=4
        )
    ),
    max_leaves=20,
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(doc=_json)
def test_any_json_gives_sets_or_a_usage_error(tmp_path: Path, doc: Any) -> None:
    try:
        sets = _sets(tmp_path, doc)
    except UsageError:
        return
    assert sets and all(set(s) == {"IN", "S"} for s in sets)
