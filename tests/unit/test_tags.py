"""Model tags: Kubernetes label syntax, and a 422 naming `tags` for anything else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from controlplane.spec import ModelSpec, check_tags
from tests.support import python_spec


def test_good_tags_are_kept() -> None:
    tags = {
        "team": "search",
        "cost_center": "42",
        "example.com/owner": "a.b-c_d",
        "empty": "",
        "A" + "b" * 62: "x" * 63,
    }
    assert ModelSpec.model_validate({**python_spec("m"), "tags": tags}).tags == tags


@pytest.mark.parametrize(
    ("tags", "words"),
    [
        ({"": "x"}, "the name must be"),
        ({"-team": "x"}, "the name must be"),
        ({"t" * 64: "x"}, "the name must be"),
        ({"team": "has space"}, "value of 'team'"),
        ({"team": "v" * 64}, "value of 'team'"),
        ({"team": "-x"}, "value of 'team'"),
        ({"Example.com/team": "x"}, "DNS subdomain"),
        ({"/team": "x"}, "DNS subdomain"),
        ({"a..b/team": "x"}, "DNS subdomain"),
        ({f"t{i}": "x" for i in range(65)}, "at most 64"),
        ({"cost_center": 42}, "valid string"),
    ],
)
def test_bad_tags_name_the_field(tags: dict[str, object], words: str) -> None:
    with pytest.raises(ValidationError) as exc:
        ModelSpec.model_validate({**python_spec("m"), "tags": tags})
    errors = exc.value.errors()
    assert errors[0]["loc"][0] == "tags", errors
    assert words in str(exc.value), str(exc.value)


@given(st.dictionaries(st.text(max_size=300), st.text(max_size=100), max_size=8))
def test_any_input_is_accepted_or_refused_with_a_value_error(tags: dict[str, str]) -> None:
    try:
        assert check_tags(tags) == tags
    except ValueError as exc:
        assert len(str(exc)) < 400  # never echoes a huge key back
