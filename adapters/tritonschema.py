"""Triton's `ModelConfig` protobuf (as shipped in tritonclient) behind the `ConfigSchema` port."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from controlplane.errors import FieldProblem, InvalidSpec


class ProtobufSchema:
    """Parses config.pbtxt with protobuf's text format into `ModelConfig`."""

    def parse(self, pbtxt: str) -> dict[str, Any]:
        message = model_config_pb2.ModelConfig()
        try:
            text_format.Parse(pbtxt, message)
        except text_format.ParseError as exc:
            raise InvalidSpec(
                [FieldProblem(f"line {exc.GetLine()}:{exc.GetColumn()}", str(exc))],
                subject="config.pbtxt",
            ) from exc
        out: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
        return out

    def parse_json(self, text: str) -> dict[str, Any]:
        """Parse Triton's JSON form (what `GET /v2/models/<m>/config` returns)."""
        message = model_config_pb2.ModelConfig()
        json_format.Parse(text, message, ignore_unknown_fields=True)
        out: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
        return out
