"""Inbound front doors of the control plane (the REST control API)."""
