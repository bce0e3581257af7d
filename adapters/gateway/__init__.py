"""The tritonfleet gateway: KServe v2 front doors (HTTP, gRPC) over a fleet of Triton servers."""
