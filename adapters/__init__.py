"""Everything that touches the outside world: Triton, processes, SQLite, Kubernetes, NVML,
Prometheus, and the inbound HTTP/gRPC front doors. Each adapter implements a port declared in
`controlplane/` and is the only place its library is called."""
