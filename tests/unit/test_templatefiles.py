"""The template port of `configgen.Renderer`: the shipped files, or any other source."""

from __future__ import annotations

import pytest
from jinja2 import TemplateNotFound

from adapters.templatefiles import TemplateFiles
from adapters.tritonschema import ProtobufSchema
from controlplane.configgen import Renderer
from controlplane.spec import ModelSpec
from tests.support import python_spec


def test_the_files_are_read_by_name_and_never_from_outside_the_directory() -> None:
    files = TemplateFiles()
    assert (files.source("python.pbtxt.j2") or "").startswith('{% extends "base.pbtxt.j2" %}')
    assert files.source("partials/tensors.j2")
    assert files.source("no_such.pbtxt.j2") is None
    with pytest.raises(TemplateNotFound):
        files.source("../configgen.py")


class _Memory:
    """A source that is not the disk: what a test (or another packaging) may inject."""

    def __init__(self, templates: dict[str, str]) -> None:
        self.templates = templates
        self.asked: list[str] = []

    def source(self, name: str) -> str | None:
        self.asked.append(name)
        return self.templates.get(name)


def test_the_renderer_reads_only_through_the_source_it_is_given() -> None:
    spec = ModelSpec.model_validate(python_spec("m"))
    shipped = TemplateFiles()
    names = ["python.pbtxt.j2", "base.pbtxt.j2"] + [
        f"partials/{p}.j2" for p in ("tensors", "scheduling", "instances", "extras")
    ]
    memory = _Memory({n: shipped.source(n) or "" for n in names})
    from_memory = Renderer(ProtobufSchema(), memory).render(spec)
    assert from_memory == Renderer(ProtobufSchema(), shipped).render(spec)
    assert set(memory.asked) == set(names)
