"""The model lifecycle as a hypothesis state machine over the in-memory ports (see
tests/unit/lifecycle.py for the operations and the invariants checked after every step).

The suite runs a bounded, derandomized sample; `python -m benchmarks.lifecycle_storm
--machine-examples N` runs it longer.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

from tests.unit.lifecycle import LifecycleMachine

LifecycleMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLifecycle = LifecycleMachine.TestCase
