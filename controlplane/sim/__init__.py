"""A deterministic discrete-event simulator of a tritonfleet fleet, driving the real policies.

The engine (`engine.Engine`: one heap, one clock) moves requests through a modelled gateway
(`gateway`: admission, cold hold, the real `controlplane.routing` policies, retries), Triton
servers with a dynamic batcher (`serving`), and a reconciler (`control`) that calls the real
`controlplane.placement.plan`, `controlplane.autoscale.decide` and `controlplane.keepalive`
on the same snapshot types the live reconciler builds. Workloads (`workloads`) are seeded
generators or a replayed trace; a scenario (`scenario.Scenario`) is one typed tree. No I/O:
file reading, YAML, progress bars and plots live in `adapters/simio.py` and the CLI.
"""

from controlplane.sim.scenario import Scenario
from controlplane.sim.simulation import Simulation, simulate

__all__ = ["Scenario", "Simulation", "simulate"]
