"""loadgen: open-loop load generation and SLO gating for KServe v2 (Triton) endpoints.

Pure parts (schedules, histograms, SLOs, sweep search, reports) are separate from the one
module that does network I/O (`transport`) and the engine that drives it (`runner`).
"""
