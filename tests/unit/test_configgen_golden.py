"""Golden files: each backend's spec renders to exactly the reviewed config.pbtxt.

Regenerate after an intended template change with `./scripts/update-golden` and review the
diff; the test only ever compares.
Every golden file is also parsed by Triton's own ModelConfig protobuf and Triton's rules.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from adapters.templatefiles import TemplateFiles
from adapters.tritonschema import ProtobufSchema
from controlplane import configrules
from controlplane.configgen import Renderer
from controlplane.spec import ModelSpec

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
SPECS = sorted((GOLDEN / "specs").glob("*.yaml"))


@pytest.mark.parametrize("spec_path", SPECS, ids=[p.stem for p in SPECS])
def test_backend_renders_golden_config(spec_path: Path) -> None:
    spec = ModelSpec.model_validate(yaml.safe_load(spec_path.read_text()))
    rendered = Renderer(ProtobufSchema(), TemplateFiles()).render(spec)
    golden = GOLDEN / f"{spec_path.stem}.pbtxt"
    assert rendered.pbtxt == golden.read_text()
    message = text_format.Parse(golden.read_text(), model_config_pb2.ModelConfig())
    assert message.name == spec.name
    assert configrules.check(rendered.config) == []


def test_every_backend_has_a_golden_spec() -> None:
    from controlplane.spec import Backend

    assert {p.stem for p in SPECS} == {b.value for b in Backend}


def test_rendered_fields_reach_the_protobuf() -> None:
    spec = ModelSpec.model_validate(
        yaml.safe_load((GOLDEN / "specs" / "onnxruntime.yaml").read_text())
    )
    cfg = Renderer(ProtobufSchema(), TemplateFiles()).render(spec).config
    assert cfg["platform"] == "onnxruntime_onnx"
    assert cfg["dynamic_batching"]["preferred_batch_size"] == [8, 16, 32]
    assert cfg["dynamic_batching"]["priority_queue_policy"]["1"]["timeout_action"] == "DELAY"
    accel = cfg["optimization"]["execution_accelerators"]["gpu_execution_accelerator"][0]
    assert accel == {
        "name": "tensorrt",
        "parameters": {"precision_mode": "FP16", "max_workspace_size_bytes": "1073741824"},
    }
    assert cfg["instance_group"] == [{"count": 2, "kind": "KIND_GPU", "gpus": [0]}]
    assert cfg["response_cache"] == {"enable": True}
    assert cfg["model_warmup"][0]["inputs"]["input"]["zero_data"] is True
