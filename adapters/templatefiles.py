"""The config.pbtxt templates as files: `model_repo_templates/`, shipped as package data.

The core's `configgen.Renderer` asks a `TemplateSource` for each template by name and never
touches the disk; this is the source that reads the files (each once, then kept).
"""

from __future__ import annotations

from pathlib import Path

from jinja2.loaders import split_template_path

from model_repo_templates import TEMPLATE_DIR


class TemplateFiles:
    """Templates under `directory` (default: the ones tritonfleet ships)."""

    def __init__(self, directory: Path = TEMPLATE_DIR) -> None:
        self._dir = directory
        self._cache: dict[str, str | None] = {}

    def source(self, name: str) -> str | None:
        if name not in self._cache:
            path = self._dir.joinpath(*split_template_path(name))  # refuses "..": never outside
            try:
                self._cache[name] = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                self._cache[name] = None
        return self._cache[name]
