"""One client request's life at the gateway, the same for every front door.

`Attempt` is the request: it is admitted (one slot of its model's admission limit), sent to
a replica the policy picks (the replica's requests in flight, the router's timeout sweep),
told the outcome of that upstream attempt (latency for the peak-EWMA, failures for ejection),
maybe retried once on another replica (`controlplane.attempts.may_retry` and the router's
retry budget), and finished: counted in the metrics and its admission slot released, exactly
once, whichever of reply, failure, timeout, client cancel or connection loss comes first.
The phases and their legal transitions are `controlplane.attempts`'s table; events arriving
after the end (a late reply, a second cancel) are ignored.

The doors subclass it (HTTP `_Exchange`, the h2 door's `Unary` and `Relay`, the grpcio
door's calls), so a request is one object: nothing more is allocated per request than
before, and the door only adds how to send bytes and how to answer its client.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from controlplane.attempts import Event, IllegalTransition, Phase, may_retry, step
from controlplane.replicas import ModelRouting, Replica

if TYPE_CHECKING:
    from adapters.gateway.router import Router

NEW, ADMITTED, SENT, DONE = Phase.NEW, Phase.ADMITTED, Phase.SENT, Phase.DONE

__all__ = ["Attempt", "IllegalTransition"]


class Attempt:
    """One request through admission, its one or two upstream attempts, and its end."""

    __slots__ = ("elapsed", "model", "phase", "replica", "router", "rt", "start", "tries")

    protocol = "http"  # the `protocol` label of its metrics
    cancel_code = "499"  # the `code` label when the client goes away (nginx's 499)
    max_tries = 2  # the first attempt and one retry

    def __init__(self, router: Router, model: str) -> None:
        self.router = router
        self.model = model
        self.phase = NEW
        self.rt: ModelRouting | None = None
        self.replica: Replica | None = None  # the replica of the latest attempt
        self.start = 0.0
        self.elapsed = 0.0  # the latest attempt's latency (to its reply, or to its head)
        self.tries = 0

    @property
    def done(self) -> bool:
        return self.phase is DONE

    def admit(self, rt: ModelRouting) -> bool:
        """Take one admission slot of the model; False when its limit is reached (counted
        as a `queue_full` rejection; `finish` it with the door's refusal)."""
        if self.phase is not NEW:
            raise IllegalTransition(self.phase, Event.ADMIT)
        if not self.router.admit(self.model, rt):
            return False
        self.rt = rt
        self.phase = ADMITTED
        return True

    def send(self, replicas: Sequence[Replica], exclude: str | None = None) -> Replica:
        """Open an upstream attempt on the replica the policy picks (never `exclude` unless it
        is the only one); the door then hands the request to it."""
        self.phase = step(self.phase, Event.SEND)
        router = self.router
        replica = self.replica = router.pick(self.model, replicas, exclude)
        self.tries += 1
        self.start = router.begin(replica, self)
        return replica

    def outcome(self, ok: bool | None) -> bool:
        """The open upstream attempt ended: `ok` a good reply, False a replica failure (counts
        towards ejection), None neither (not the replica's doing). False when the request had
        finished already (a late event: ignore it)."""
        phase = self.phase = step(self.phase, Event.OUTCOME)
        if phase is DONE:
            return False
        assert self.replica is not None
        self.elapsed = self.router.end(self.model, self.replica, self, self.start, ok)
        return True

    def retry(self, reason: str, replicas: Sequence[Replica] | None = None) -> Replica | None:
        """After a failed outcome: send again to another replica of `replicas` (default: the
        model's current ones) if the rules and the retry budget allow; None otherwise."""
        if self.phase is not ADMITTED or self.replica is None:
            return None
        rt = self.rt
        router = self.router
        if replicas is None:
            replicas = router.directory.replicas(self.model)
        if not may_retry(
            tries=self.tries,
            max_tries=self.max_tries,
            candidates=len(replicas),
            sequence=rt is None or rt.sequence,
        ) or not router.spend_retry(self.model, reason):
            return None
        return self.send(replicas, exclude=self.replica.server_id)

    def finish(self, code: str, ok: bool | None = None) -> bool:
        """Count the request under `code` and give back what it holds, exactly once; an
        attempt still open is ended first with `ok`. False when it had finished already."""
        phase = self.phase
        if phase is DONE:
            return False
        self.phase = DONE
        router = self.router
        replica = self.replica
        if phase is SENT:
            assert replica is not None
            self.elapsed = router.end(self.model, replica, self, self.start, ok)
        if replica is not None:
            router.metrics.observe(self.model, replica.server_id, self.protocol, code, self.elapsed)
        else:
            router.metrics.local(self.model, self.protocol, code)
        if phase is not NEW:
            router.release(self.model)
        return True

    def cancel(self) -> bool:
        """The client cancelled or went away: end everything, count it as cancelled (a
        request not yet admitted held nothing and was never a model's: nothing counted)."""
        if self.phase is NEW:
            self.phase = DONE
            return True
        return self.finish(self.cancel_code)

    def expire(self) -> None:
        """The router's sweep: the open attempt had no reply within `upstream_timeout_s`.
        Doors override it to stop the upstream call and answer their client."""
        self.finish("504", ok=False)
