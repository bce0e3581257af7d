"""The legal life of one gateway request: its phases, their transitions, when it may retry.

Every front door (HTTP, the h2 gRPC door, the grpcio door) runs each routed request through
the same small state machine (`adapters/gateway/attempt.Attempt`); this module is its pure
part, so the rules can be read in one table and tested without sockets:

    NEW --admit--> ADMITTED --send--> SENT --outcome--> ADMITTED (retry: send again)
     |                 |                |
     +----finish-------+-----finish-----+--> DONE   (finish from SENT ends the attempt first)

- NEW: the request exists; it holds nothing.
- ADMITTED: it holds one admission slot of its model (the router's in-flight count), and no
  upstream attempt is open (a cold hold, between a failure and its retry, a reply being
  relayed after its head).
- SENT: one upstream attempt is open: it counts in its replica's requests in flight and the
  router's timeout sweep can expire it.
- DONE: everything it held was given back exactly once; every later event is ignored.

Anything else (sending twice, an outcome without an attempt) is a bug in a door and raises
`IllegalTransition`.
"""

from __future__ import annotations

from enum import IntEnum


class Phase(IntEnum):
    NEW = 0
    ADMITTED = 1
    SENT = 2
    DONE = 3


class Event(IntEnum):
    ADMIT = 0  # the model's admission limit let the request in
    SEND = 1  # a replica was chosen and the request handed to it
    OUTCOME = 2  # the upstream attempt ended: a reply, a failure, a timeout or a cancel
    FINISH = 3  # the client got (or can no longer get) its answer


class IllegalTransition(RuntimeError):
    """A door drove a request through a transition the lifecycle does not have."""

    def __init__(self, phase: Phase, event: Event) -> None:
        super().__init__(f"request lifecycle: {event.name} is not allowed in phase {phase.name}")
        self.phase = phase
        self.event = event


_N = len(Event)
# NEXT[phase * len(Event) + event]: the phase after `event`, or None where it is illegal.
# A flat tuple indexed by small ints, so a step allocates nothing on the hot path.
_TABLE: dict[tuple[Phase, Event], Phase] = {
    (Phase.NEW, Event.ADMIT): Phase.ADMITTED,
    (Phase.NEW, Event.FINISH): Phase.DONE,  # refused before admission: nothing to give back
    (Phase.ADMITTED, Event.SEND): Phase.SENT,
    (Phase.ADMITTED, Event.FINISH): Phase.DONE,
    (Phase.SENT, Event.OUTCOME): Phase.ADMITTED,
    (Phase.SENT, Event.FINISH): Phase.DONE,  # cancel/timeout: the attempt is ended first
    # DONE is absorbing: late replies, second cancels and sweeps are ignored, never errors.
    (Phase.DONE, Event.ADMIT): Phase.DONE,
    (Phase.DONE, Event.OUTCOME): Phase.DONE,
    (Phase.DONE, Event.FINISH): Phase.DONE,
}
NEXT: tuple[Phase | None, ...] = tuple(_TABLE.get((p, e)) for p in Phase for e in Event)


def step(phase: Phase, event: Event) -> Phase:
    """The phase after `event` in `phase`; raises `IllegalTransition` where there is none."""
    nxt = NEXT[phase * _N + event]
    if nxt is None:
        raise IllegalTransition(phase, event)
    return nxt


def may_retry(*, tries: int, max_tries: int, candidates: int, sequence: bool) -> bool:
    """Whether a failed attempt may go to another replica (before the retry budget is asked).

    Only `max_tries` attempts per request, only when another replica exists, and never for
    sequence (stateful) models, whose requests must stay on one replica.
    """
    return tries < max_tries and candidates >= 2 and not sequence


class Unavailable(IntEnum):
    """What a replica's 503 (HTTP) or UNAVAILABLE (gRPC) means.

    Triton sheds load with the same status as a failing server, told apart by its message
    (the model's queue policy, `dynamic_batching.default_queue_policy`): a replica that sheds
    is alive and answering, and ejecting it for that would move its load onto the others."""

    FAILURE = 0  # the replica failed: counts towards ejection; may retry elsewhere
    QUEUE_FULL = 1  # refused before queueing (`max_queue_size`): no failure; may retry elsewhere
    TIMED_OUT = 2  # waited out its queue timeout (the model's, or the client's override): no
    # failure, and no retry either: the request has spent the time it was given


# Triton's messages (core/src/dynamic_batch_scheduler.cc, scheduler_utils.cc), matched
# anywhere in the error text: they may come after a "[request id: …]" prefix.
QUEUE_FULL_MESSAGE = b"Exceeds maximum queue size"
QUEUE_TIMEOUT_MESSAGE = b"Request timeout expired"


def unavailable(message: bytes) -> Unavailable:
    """Classify a 503 / UNAVAILABLE by the start of its error text (a few hundred bytes)."""
    if QUEUE_TIMEOUT_MESSAGE in message:
        return Unavailable.TIMED_OUT
    if QUEUE_FULL_MESSAGE in message:
        return Unavailable.QUEUE_FULL
    return Unavailable.FAILURE
