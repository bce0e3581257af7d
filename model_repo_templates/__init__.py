"""Jinja2 templates for Triton's config.pbtxt (one per backend, shared partials) and the
example models `tritonfleet up` registers; shipped as package data so an installed tritonfleet
finds them without the source tree."""

from pathlib import Path

TEMPLATE_DIR = Path(__file__).resolve().parent
EXAMPLES_DIR = TEMPLATE_DIR / "examples"
