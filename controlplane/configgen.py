"""Rendering a `ModelSpec` into Triton's `config.pbtxt`, and proving Triton would take it.

Templates (one per backend, shared partials) come from a `TemplateSource` port (the files in
`model_repo_templates/` through `adapters.templatefiles`), so the core reads no disk. After
rendering, the text is parsed back into Triton's own `ModelConfig` protobuf through the `ConfigSchema` port
(the protobuf classes ship in tritonclient, so the parse lives in an adapter) and checked by
`configrules`. Only a config that survives both is ever stored or sent to a server.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import jinja2

from controlplane import configrules
from controlplane.errors import InvalidSpec
from controlplane.spec import ModelSpec


class TemplateSource(Protocol):
    """Where the Jinja2 templates come from (`adapters.templatefiles.TemplateFiles`)."""

    def source(self, name: str) -> str | None:
        """The text of template `name` ("python.pbtxt.j2", "partials/tensors.j2"); None when
        there is no such template."""
        ...


class ConfigSchema(Protocol):
    """Parses config.pbtxt text into Triton's ModelConfig, returned as its dict form."""

    def parse(self, pbtxt: str) -> dict[str, Any]:
        """Raise `InvalidSpec` (subject 'config.pbtxt') naming the line and field on failure."""
        ...


@dataclass(frozen=True)
class RenderedConfig:
    pbtxt: str
    config: Mapping[str, Any]  # ModelConfig as a dict (proto field names)

    def json(self) -> str:
        """The JSON form Triton's load API takes as a `config` override."""
        return json.dumps(self.config, separators=(",", ":"), sort_keys=True)


def _pbstr(value: object) -> str:
    """A protobuf text-format string literal."""
    out = []
    for ch in str(value):
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\{ord(ch):03o}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


class Renderer:
    """Jinja2 environment over a template source; renders and validates specs."""

    def __init__(self, schema: ConfigSchema, templates: TemplateSource) -> None:
        self._schema = schema
        self._env = jinja2.Environment(
            loader=jinja2.FunctionLoader(templates.source),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
        )
        self._env.filters["pbstr"] = _pbstr

    def render_text(self, spec: ModelSpec) -> str:
        template = self._env.get_template(f"{spec.backend.value}.pbtxt.j2")
        text = template.render(spec=spec)
        # Drop the blank lines left by empty optional blocks.
        return "\n".join(ln.rstrip() for ln in text.splitlines() if ln.strip()) + "\n"

    def render(self, spec: ModelSpec) -> RenderedConfig:
        """Render, parse back into Triton's protobuf and apply Triton's rules."""
        text = self.render_text(spec)
        config = self._schema.parse(text)
        problems = configrules.check(config)
        if problems:
            raise InvalidSpec(problems, subject=f"config.pbtxt for {spec.name!r}")
        return RenderedConfig(pbtxt=text, config=config)


def served_matches(generated: Mapping[str, Any], served: Mapping[str, Any]) -> bool:
    """Whether a config Triton serves carries every field we generated, with the same values.

    Triton fills in defaults, so this is a subset comparison; numbers compare by value whether
    they arrive as JSON numbers or as proto3 int64 strings.
    """

    def same(expected: object, actual: object) -> bool:
        if isinstance(expected, Mapping):
            return isinstance(actual, Mapping) and all(
                same(v, actual.get(k)) for k, v in expected.items()
            )
        if isinstance(expected, list):
            return (
                isinstance(actual, list)
                and len(expected) == len(actual)
                and all(same(e, a) for e, a in zip(expected, actual, strict=True))
            )
        if isinstance(expected, bool) or isinstance(actual, bool):
            return expected == actual
        return str(expected) == str(actual)

    return same(generated, served)
