"""The request lifecycle's table (`controlplane.attempts`): every phase and event, exhaustively."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.attempts import (
    Event,
    IllegalTransition,
    Phase,
    Unavailable,
    may_retry,
    step,
    unavailable,
)

LEGAL = {
    (Phase.NEW, Event.ADMIT): Phase.ADMITTED,
    (Phase.NEW, Event.FINISH): Phase.DONE,
    (Phase.ADMITTED, Event.SEND): Phase.SENT,
    (Phase.ADMITTED, Event.FINISH): Phase.DONE,
    (Phase.SENT, Event.OUTCOME): Phase.ADMITTED,
    (Phase.SENT, Event.FINISH): Phase.DONE,
    (Phase.DONE, Event.ADMIT): Phase.DONE,
    (Phase.DONE, Event.OUTCOME): Phase.DONE,
    (Phase.DONE, Event.FINISH): Phase.DONE,
}


@pytest.mark.parametrize(("phase", "event"), list(itertools.product(Phase, Event)))
def test_every_pair_is_either_a_listed_transition_or_refused(phase: Phase, event: Event) -> None:
    if (phase, event) in LEGAL:
        assert step(phase, event) is LEGAL[phase, event]
    else:
        with pytest.raises(IllegalTransition, match=f"{event.name}.*{phase.name}"):
            step(phase, event)


@given(st.lists(st.sampled_from(list(Event)), max_size=30))
def test_done_is_reached_only_by_finish_and_never_left(events: list[Event]) -> None:
    phase = Phase.NEW
    for e in events:
        try:
            nxt = step(phase, e)
        except IllegalTransition:
            continue
        if phase is Phase.DONE:
            assert nxt is Phase.DONE
        elif nxt is Phase.DONE:
            assert e is Event.FINISH
        phase = nxt


def test_sending_needs_admission_and_no_open_attempt() -> None:
    sendable = {p for p in Phase if (p, Event.SEND) in LEGAL}
    assert sendable == {Phase.ADMITTED}


@pytest.mark.parametrize(
    ("tries", "candidates", "sequence", "want"),
    [
        (1, 2, False, True),  # the first attempt failed, another replica exists
        (2, 3, False, False),  # the retry failed too: no third attempt
        (1, 1, False, False),  # nowhere else to go
        (1, 0, False, False),
        (1, 3, True, False),  # a sequence model stays on its replica
    ],
)
def test_may_retry(tries: int, candidates: int, sequence: bool, want: bool) -> None:
    assert may_retry(tries=tries, max_tries=2, candidates=candidates, sequence=sequence) is want


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        (b'{"error":"Request timeout expired"}', Unavailable.TIMED_OUT),
        (b"[request id: <id_unknown>] Exceeds maximum queue size", Unavailable.QUEUE_FULL),
        (b'{"error":"Server not ready"}', Unavailable.FAILURE),
        (b"", Unavailable.FAILURE),
    ],
)
def test_triton_shedding_is_told_apart_from_failure(message: bytes, kind: Unavailable) -> None:
    assert unavailable(message) is kind
