"""tritonfleet's core: what to run where, and why.

Nothing in this package performs I/O or imports an I/O library; the ports it declares
(`fleet.FleetDriver`, `store.ModelStore`, `triton.TritonControl`, ...) are implemented in
`adapters/`. That keeps every policy testable with plain data and a fake clock.
"""
