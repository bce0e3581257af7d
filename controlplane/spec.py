"""`ModelSpec`: what a user registers, typed and validated at the boundary.

A spec is the user's intent for one model: how Triton should run it (backend, batching,
instances, accelerators, warmup) and how the fleet should keep it (warm floor, ceiling,
priority, memory). Validation here names the spec field and what to change; rules that only
make sense on the rendered Triton config live in `configrules`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from enum import StrEnum
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

# Names become directory names, URL path segments and Prometheus label values: keep them boring.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
_NAME_RE = re.compile(NAME_PATTERN)
_TENSOR_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/\[\]-]{0,127}$")
MAX_INLINE_FILES_BYTES = 4 * 1024 * 1024


def check_model_name(name: str) -> str:
    """Raise ValueError with the reason when `name` cannot be a model name."""
    if len(name) > 128:
        raise ValueError(f"is {len(name)} characters long; use at most 128")
    if not _NAME_RE.fullmatch(name) or ".." in name:
        raise ValueError(
            "must start with a letter or digit and contain only letters, digits, '_', '-' "
            "and '.' (no '/', '..', '%' or spaces), at most 128 characters"
        )
    return name


# The same rule as a JSON Schema pattern (no look-ahead, no '..'), for the OpenAPI document.
NAME_SCHEMA: dict[str, Any] = {
    "pattern": r"^[A-Za-z0-9]([A-Za-z0-9_-]|\.[A-Za-z0-9_-])*\.?$",
    "minLength": 1,
    "maxLength": 128,
}
ModelName = Annotated[
    str,
    Field(description="Model name; " + NAME_PATTERN + ", no '..'", json_schema_extra=NAME_SCHEMA),
]

# Tags are validated like Kubernetes labels, so they can become labels anywhere unchanged.
_LABEL_NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
MAX_TAGS = 64
_LABEL_RULE = (
    "at most 63 characters of letters, digits, '-', '_' and '.', starting and ending with a "
    "letter or digit"
)


def check_tags(tags: dict[str, str]) -> dict[str, str]:
    """Raise ValueError naming the first bad key or value (Kubernetes label syntax)."""
    if len(tags) > MAX_TAGS:
        raise ValueError(f"has {len(tags)} tags; use at most {MAX_TAGS}")
    for key, value in tags.items():
        prefix, slash, name = key.rpartition("/")
        shown = key if len(key) <= 80 else key[:80] + "…"
        if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN_RE.fullmatch(prefix)):
            raise ValueError(
                f"key {shown!r}: the prefix before '/' must be a DNS subdomain (lowercase "
                "letters, digits, '-' and '.', at most 253 characters), e.g. 'example.com/team'"
            )
        if not _LABEL_NAME_RE.fullmatch(name):
            raise ValueError(f"key {shown!r}: the name must be {_LABEL_RULE}")
        if value and not _LABEL_NAME_RE.fullmatch(value):
            raise ValueError(
                f"value of {shown!r}: must be empty or {_LABEL_RULE} (quote numbers in YAML)"
            )
    return tags


def _takes_bool(annotation: Any) -> bool:
    """Whether a field annotation admits `bool` anywhere (Any, a union or a container of it)."""
    if annotation is bool or annotation is Any:
        return True
    return any(_takes_bool(a) for a in get_args(annotation))


def _has_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, list | tuple):
        return any(_has_bool(v) for v in value)
    return False


class InputModel(BaseModel):
    """Base of what users send: unknown fields refused, and no `true`/`false` where a number is
    meant (pydantic would otherwise read `max_batch_size: true` as 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_as_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if _has_bool(value) and info.field_name is not None:
            field = cls.model_fields.get(info.field_name)
            if field is not None and not _takes_bool(field.annotation):
                shown = json.dumps(value)
                raise ValueError(f"{shown} holds a boolean where a number goes: write the number")
        return value


class Backend(StrEnum):
    ONNXRUNTIME = "onnxruntime"
    TENSORRT = "tensorrt"
    PYTORCH = "pytorch"
    TENSORFLOW = "tensorflow"
    OPENVINO = "openvino"
    PYTHON = "python"
    ENSEMBLE = "ensemble"


class DataType(StrEnum):
    BOOL = "TYPE_BOOL"
    UINT8 = "TYPE_UINT8"
    UINT16 = "TYPE_UINT16"
    UINT32 = "TYPE_UINT32"
    UINT64 = "TYPE_UINT64"
    INT8 = "TYPE_INT8"
    INT16 = "TYPE_INT16"
    INT32 = "TYPE_INT32"
    INT64 = "TYPE_INT64"
    FP16 = "TYPE_FP16"
    FP32 = "TYPE_FP32"
    FP64 = "TYPE_FP64"
    STRING = "TYPE_STRING"
    BF16 = "TYPE_BF16"

    @classmethod
    def parse(cls, value: Any) -> Any:
        """Accept Triton's TYPE_FP32, KServe's FP32 and BYTES (= TYPE_STRING)."""
        if isinstance(value, str):
            v = value.strip().upper()
            if v in ("BYTES", "TYPE_BYTES"):
                return cls.STRING
            if not v.startswith("TYPE_"):
                v = "TYPE_" + v
            return v
        return value

    @property
    def kserve(self) -> str:
        return "BYTES" if self is DataType.STRING else self.value.removeprefix("TYPE_")


# Accepts Triton's TYPE_FP32, KServe's FP32 and BYTES wherever a datatype is given; the JSON
# Schema says so (a client generated from the OpenAPI document must not refuse "FP32").
DType = Annotated[
    DataType,
    BeforeValidator(DataType.parse),
    WithJsonSchema(
        {
            "type": "string",
            "enum": [
                *(d.value for d in DataType),
                *(d.kserve for d in DataType),
                "TYPE_BYTES",
            ],
            "description": "Triton's TYPE_FP32 or KServe's FP32 (BYTES = TYPE_STRING); "
            "case-insensitive",
        }
    ),
]


class TensorSpec(InputModel):
    name: str = Field(description="Tensor name as the model knows it")
    datatype: DType
    dims: list[int] = Field(description="Shape without the batch dimension; -1 = variable")
    reshape: list[int] | None = Field(default=None, description="Shape the backend sees")
    optional: bool = Field(default=False, description="Inputs only: may be omitted")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _TENSOR_NAME_RE.fullmatch(v):
            raise ValueError("must be 1-128 characters of letters, digits, '_', '.', ':', '/', '-'")
        return v

    @field_validator("dims")
    @classmethod
    def _dims(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError(
                "has rank 0; give at least one dimension (use [1] for a scalar per batch item)"
            )
        bad = [d for d in v if d == 0 or d < -1]
        if bad:
            raise ValueError(f"contains {bad}; each dimension must be positive or -1 (variable)")
        return v

    @field_validator("reshape")
    @classmethod
    def _reshape(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(d == 0 or d < -1 for d in v):
            raise ValueError("each dimension must be positive or -1")
        return v


class VersionPolicy(InputModel):
    kind: Literal["latest", "all", "specific"] = "latest"
    num_versions: int = Field(default=1, ge=1)
    versions: list[int] = Field(default_factory=list)

    @model_validator(mode="after")
    def _versions(self) -> VersionPolicy:
        if self.kind == "specific" and not self.versions:
            raise ValueError("kind 'specific' needs a non-empty 'versions' list")
        if any(v < 1 for v in self.versions):
            raise ValueError("versions must be positive integers")
        return self


class TimeoutAction(StrEnum):
    REJECT = "REJECT"
    DELAY = "DELAY"


class QueuePolicy(InputModel):
    timeout_action: TimeoutAction = TimeoutAction.REJECT
    default_timeout_us: int = Field(default=0, ge=0)
    allow_timeout_override: bool = False
    max_queue_size: int = Field(default=0, ge=0, description="0 = unbounded")


class DynamicBatching(InputModel):
    preferred_batch_sizes: list[int] = Field(default_factory=list)
    max_queue_delay_us: int = Field(default=0, ge=0)
    preserve_ordering: bool = False
    priority_levels: int = Field(default=0, ge=0)
    default_priority_level: int = Field(default=0, ge=0)
    default_queue_policy: QueuePolicy | None = None
    priority_queue_policy: dict[int, QueuePolicy] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _priorities(self) -> DynamicBatching:
        if any(s <= 0 for s in self.preferred_batch_sizes):
            raise ValueError("preferred_batch_sizes must be positive")
        if self.priority_levels:
            if not 1 <= self.default_priority_level <= self.priority_levels:
                raise ValueError(
                    f"default_priority_level {self.default_priority_level} must be in "
                    f"[1, priority_levels={self.priority_levels}]"
                )
        elif self.default_priority_level:
            raise ValueError("default_priority_level needs priority_levels > 0")
        bad = [p for p in self.priority_queue_policy if not 1 <= p <= self.priority_levels]
        if bad:
            raise ValueError(
                f"priority_queue_policy has levels {bad} outside [1, priority_levels="
                f"{self.priority_levels}]"
            )
        return self


_CORRID_TYPES = {"TYPE_UINT64", "TYPE_INT64", "TYPE_UINT32", "TYPE_INT32", "TYPE_STRING"}


class SequenceControl(InputModel):
    start: str | None = Field(default=None, description="Input tensor for CONTROL_SEQUENCE_START")
    end: str | None = None
    ready: str | None = None
    corrid: str | None = None
    corrid_datatype: DType = DataType.UINT64

    @field_validator("corrid_datatype")
    @classmethod
    def _corrid(cls, v: DataType) -> DataType:
        if v.value not in _CORRID_TYPES:
            raise ValueError(
                f"{v.kserve}: Triton's correlation ID must be UINT64, INT64, UINT32, INT32 or STRING"
            )
        return v


class SequenceBatching(InputModel):
    strategy: Literal["direct", "oldest"] = "direct"
    max_sequence_idle_us: int = Field(default=1_000_000, ge=1)
    control: SequenceControl = Field(default_factory=SequenceControl)
    max_candidate_sequences: int = Field(default=0, ge=0, description="oldest only")
    preferred_batch_sizes: list[int] = Field(default_factory=list, description="oldest only")
    max_queue_delay_us: int = Field(default=0, ge=0, description="oldest only")


class InstanceKind(StrEnum):
    AUTO = "KIND_AUTO"
    GPU = "KIND_GPU"
    CPU = "KIND_CPU"
    MODEL = "KIND_MODEL"

    @classmethod
    def parse(cls, value: Any) -> Any:
        if isinstance(value, str):
            v = value.strip().upper()
            return v if v.startswith("KIND_") else "KIND_" + v
        return value


class InstanceGroup(InputModel):
    count: int = Field(default=1, ge=1, le=64)
    kind: Annotated[
        InstanceKind,
        BeforeValidator(InstanceKind.parse),
        WithJsonSchema(
            {
                "type": "string",
                "enum": [*(k.value for k in InstanceKind), *(k.name for k in InstanceKind)],
                "description": "KIND_CPU or CPU, ...; case-insensitive",
            }
        ),
    ] = InstanceKind.AUTO
    gpus: list[int] = Field(default_factory=list)

    @model_validator(mode="after")
    def _gpus(self) -> InstanceGroup:
        if self.gpus and self.kind is InstanceKind.CPU:
            raise ValueError("gpus cannot be set for kind KIND_CPU")
        if any(g < 0 for g in self.gpus):
            raise ValueError("gpus must be non-negative device indices")
        return self


class Precision(StrEnum):
    FP32 = "FP32"
    FP16 = "FP16"
    INT8 = "INT8"


class Accelerator(InputModel):
    """An ONNX Runtime execution accelerator (Triton `execution_accelerators`)."""

    name: Literal["tensorrt", "cuda", "openvino"]
    precision: Precision | None = Field(default=None, description="tensorrt only")
    max_workspace_size_bytes: int | None = Field(default=None, ge=1, description="tensorrt only")
    parameters: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _trt_only(self) -> Accelerator:
        if self.name != "tensorrt" and (self.precision or self.max_workspace_size_bytes):
            raise ValueError("precision and max_workspace_size_bytes apply to 'tensorrt' only")
        return self


class Optimization(InputModel):
    gpu_accelerators: list[Accelerator] = Field(default_factory=list)
    cpu_accelerators: list[Accelerator] = Field(default_factory=list)
    cuda_graphs: bool = Field(default=False, description="TensorRT: capture CUDA graphs")
    priority: Literal["default", "max", "min"] = "default"

    @model_validator(mode="after")
    def _placement(self) -> Optimization:
        if any(a.name == "openvino" for a in self.gpu_accelerators):
            raise ValueError("openvino is a CPU accelerator; list it under cpu_accelerators")
        if any(a.name in ("tensorrt", "cuda") for a in self.cpu_accelerators):
            raise ValueError(
                "tensorrt and cuda are GPU accelerators; list them under gpu_accelerators"
            )
        return self


class WarmupInput(InputModel):
    datatype: DType
    dims: list[int]
    source: Literal["zero", "random"] = "zero"

    @field_validator("dims")
    @classmethod
    def _dims(cls, v: list[int]) -> list[int]:
        if any(d <= 0 for d in v):
            raise ValueError("warmup dims must be concrete positive sizes (no -1)")
        return v


class Warmup(InputModel):
    name: str = "warmup"
    batch_size: int = Field(default=1, ge=1)
    count: int = Field(default=1, ge=1, le=1000)
    inputs: dict[str, WarmupInput]


class EnsembleStep(InputModel):
    model_name: str
    model_version: int = -1
    input_map: dict[str, str] = Field(description="step input name -> ensemble tensor name")
    output_map: dict[str, str] = Field(description="step output name -> ensemble tensor name")

    @field_validator("model_name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_model_name(v)


class Artifact(InputModel):
    """Where the model's files come from: a repository URI or small inline files."""

    uri: str | None = Field(
        default=None,
        description="s3://bucket/path, gs://bucket/path, or a path under the local root",
    )
    files: dict[str, str] | None = Field(
        default=None,
        description="Inline files for small Python models: relative path (e.g. '1/model.py') -> "
        "UTF-8 text, or 'base64:<data>' for binary content",
    )

    @model_validator(mode="after")
    def _one(self) -> Artifact:
        if (self.uri is None) == (self.files is None):
            raise ValueError("give exactly one of 'uri' or 'files'")
        if self.files is not None:
            total = 0
            for path, content in self.files.items():
                _check_relative_path(path)
                total += len(decode_file(content))
            if total > MAX_INLINE_FILES_BYTES:
                raise ValueError(
                    f"inline files total {total} bytes; the limit is {MAX_INLINE_FILES_BYTES}: "
                    "put larger models in a repository and give its 'uri'"
                )
        return self


def _check_relative_path(path: str) -> None:
    parts = path.split("/")
    if (
        not path
        or path.startswith("/")
        or "\\" in path
        or "\x00" in path
        or "%" in path
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise ValueError(
            f"file path {path!r} must be relative, like '1/model.py', with no '..', '%', "
            "backslashes or empty segments"
        )
    if not parts[0].isdigit():
        raise ValueError(
            f"file path {path!r} must start with a version directory, like '1/model.py'"
        )


def decode_file(content: str) -> bytes:
    if content.startswith("base64:"):
        try:
            return base64.b64decode(content[7:], validate=True)
        except binascii.Error as exc:
            raise ValueError(f"invalid base64 content: {exc}") from exc
    return content.encode()


class FleetPolicy(InputModel):
    """How the fleet keeps this model: the warm floor, the ceiling, and what it costs."""

    min_replicas: int = Field(default=0, ge=0, le=64, description="Warm floor, never evicted")
    max_replicas: int = Field(default=1, ge=1, le=64)
    priority: int = Field(default=0, ge=0, le=100, description="Higher wins room first")
    memory_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1,
        description="Declared footprint per replica; replaced by the measured one after a load",
    )
    server_labels: dict[str, str] = Field(
        default_factory=dict,
        description="Place only on servers with these labels (e.g. gpu.product, mig.profile)",
    )

    @model_validator(mode="after")
    def _bounds(self) -> FleetPolicy:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})"
            )
        return self


class Slo(InputModel):
    """The latency and error objective the autopilot holds this model to (gateway-measured)."""

    p95_ms: float | None = Field(
        default=None, gt=0, le=600_000, description="95th-percentile latency target, ms"
    )
    p99_ms: float | None = Field(
        default=None, gt=0, le=600_000, description="99th-percentile latency target, ms"
    )
    max_error_rate: float = Field(
        default=0.001, ge=0, lt=1, description="Largest share of failed requests, 0..1"
    )

    @model_validator(mode="after")
    def _ordered(self) -> Slo:
        if self.p95_ms is not None and self.p99_ms is not None and self.p95_ms > self.p99_ms:
            raise ValueError(
                f"p95_ms ({self.p95_ms:g}) exceeds p99_ms ({self.p99_ms:g}); a 95th percentile "
                "can never be above the 99th: lower p95_ms or raise p99_ms"
            )
        if self.p95_ms is None and self.p99_ms is None:
            raise ValueError("give p95_ms, p99_ms or both")
        return self


class Admission(InputModel):
    """How many requests the gateway lets in flight to this model before a fast 429."""

    max_inflight: int | Literal["auto"] | None = Field(
        default="auto",
        description="A number (1..100000), 'auto' (derived from measured capacity and the SLO) "
        "or null (no limit)",
    )

    @field_validator("max_inflight")
    @classmethod
    def _range(cls, v: int | str | None) -> int | str | None:
        if isinstance(v, int) and not 1 <= v <= 100_000:
            raise ValueError(f"{v} is out of range; use 1..100000, 'auto' or null")
        return v


class ScalingPolicy(StrEnum):
    SLO = "slo"  # the autopilot: demand x measured capacity, corrected by SLO error
    TARGET_INFLIGHT = "target-inflight"  # Ray Serve's target_ongoing_requests, as a baseline
    STATIC = "static"  # only the warm floor and explicit demand (ensure); no load-driven scaling


class BatchingBounds(InputModel):
    """The range the autopilot may move `dynamic_batching.max_queue_delay_us` within."""

    min_queue_delay_us: int = Field(default=0, ge=0, le=10_000_000)
    max_queue_delay_us: int = Field(default=20_000, ge=0, le=10_000_000)

    @model_validator(mode="after")
    def _ordered(self) -> BatchingBounds:
        if self.min_queue_delay_us > self.max_queue_delay_us:
            raise ValueError(
                f"min_queue_delay_us ({self.min_queue_delay_us}) exceeds max_queue_delay_us "
                f"({self.max_queue_delay_us})"
            )
        return self


class Autoscaling(InputModel):
    """How the fleet follows this model's load between `min_replicas` and `max_replicas`."""

    policy: ScalingPolicy = Field(default=ScalingPolicy.SLO)
    target_inflight: float = Field(
        default=2.0,
        gt=0,
        le=10_000,
        description="target-inflight policy: requests in flight per replica to aim for",
    )
    target_utilization: float = Field(
        default=0.7,
        gt=0,
        le=1,
        description="slo policy: share of each replica's measured capacity to plan for",
    )
    scale_down_delay_s: float = Field(
        default=30.0, ge=0, le=86_400, description="Demand must stay lower this long to scale in"
    )
    idle_to_zero_s: float = Field(
        default=300.0,
        gt=0,
        le=7 * 86_400,
        description="min_replicas 0: unload after this long without a request",
    )
    batching: BatchingBounds | None = Field(
        default=None,
        description="Let the autopilot tune max_queue_delay_us within these bounds",
    )


class ModelSpec(InputModel):
    """One model as the user registers it."""

    name: ModelName
    backend: Backend
    max_batch_size: int = Field(default=0, ge=0, le=1 << 20)
    inputs: list[TensorSpec] = Field(default_factory=list)
    outputs: list[TensorSpec] = Field(default_factory=list)
    version_policy: VersionPolicy | None = None
    dynamic_batching: DynamicBatching | None = None
    sequence_batching: SequenceBatching | None = None
    instance_groups: list[InstanceGroup] = Field(default_factory=list)
    optimization: Optimization | None = None
    warmup: list[Warmup] = Field(default_factory=list)
    response_cache: bool = False
    parameters: dict[str, str] = Field(default_factory=dict)
    ensemble_steps: list[EnsembleStep] = Field(default_factory=list)
    default_model_filename: str | None = None
    artifact: Artifact | None = None
    policy: FleetPolicy = Field(default_factory=FleetPolicy)
    slo: Slo | None = Field(default=None, description="Latency/error objective (autopilot)")
    admission: Admission = Field(default_factory=Admission)
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    tags: dict[str, str] = Field(
        default_factory=dict,
        description="Free-form labels for chargeback and filtering (Kubernetes label syntax), "
        "e.g. {team: search, cost_center: '42'}",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_model_name(v)

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: dict[str, str]) -> dict[str, str]:
        return check_tags(v)

    @field_validator("backend", mode="before")
    @classmethod
    def _backend(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip().lower() not in {b.value for b in Backend}:
            allowed = ", ".join(b.value for b in Backend)
            raise ValueError(f"unknown backend {v!r}; use one of: {allowed}")
        return v.strip().lower() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _coherent(self) -> ModelSpec:
        problems: list[str] = []
        if not self.inputs and self.backend is not Backend.ENSEMBLE:
            problems.append("inputs: declare at least one input tensor")
        if not self.outputs:
            problems.append("outputs: declare at least one output tensor")
        for group, tensors in (("inputs", self.inputs), ("outputs", self.outputs)):
            names = [t.name for t in tensors]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                problems.append(f"{group}: duplicate tensor names {dup}")
        if any(t.optional for t in self.outputs):
            problems.append("outputs: 'optional' applies to inputs only")
        if self.max_batch_size == 0 and self.dynamic_batching is not None:
            problems.append(
                "dynamic_batching: needs max_batch_size > 0 (Triton cannot batch a model "
                "whose max_batch_size is 0); set max_batch_size or remove dynamic_batching"
            )
        if self.dynamic_batching and self.sequence_batching:
            problems.append("sequence_batching: cannot be combined with dynamic_batching")
        if self.dynamic_batching:
            too_big = [
                s for s in self.dynamic_batching.preferred_batch_sizes if s > self.max_batch_size
            ]
            if too_big:
                problems.append(
                    f"dynamic_batching.preferred_batch_sizes: {too_big} exceed max_batch_size "
                    f"{self.max_batch_size}"
                )
        if self.backend is Backend.ENSEMBLE:
            if not self.ensemble_steps:
                problems.append("ensemble_steps: an ensemble needs at least one step")
            if self.instance_groups:
                problems.append("instance_groups: an ensemble has no instances of its own")
            if self.artifact is not None:
                problems.append("artifact: an ensemble has no files; remove 'artifact'")
            if self.dynamic_batching or self.sequence_batching:
                problems.append(
                    "dynamic_batching: an ensemble is scheduled by its steps; batch in the "
                    "composing models instead"
                )
        elif self.ensemble_steps:
            problems.append("ensemble_steps: only for backend 'ensemble'")
        if (
            self.optimization
            and self.optimization.cuda_graphs
            and self.backend is not Backend.TENSORRT
        ):
            problems.append("optimization.cuda_graphs: applies to backend 'tensorrt' only")
        if (
            self.optimization
            and (self.optimization.gpu_accelerators or self.optimization.cpu_accelerators)
            and self.backend not in (Backend.ONNXRUNTIME, Backend.TENSORFLOW)
        ):
            problems.append(
                "optimization: execution accelerators apply to 'onnxruntime' and 'tensorflow'"
            )
        for i, w in enumerate(self.warmup):
            if self.max_batch_size and w.batch_size > self.max_batch_size:
                problems.append(f"warmup[{i}].batch_size: exceeds max_batch_size")
            unknown = sorted(set(w.inputs) - {t.name for t in self.inputs})
            if unknown:
                problems.append(f"warmup[{i}].inputs: unknown input tensors {unknown}")
        if self.artifact and self.artifact.files is not None and self.backend is not Backend.PYTHON:
            problems.append("artifact.files: inline files are for 'python' models; give a 'uri'")
        if self.artifact is None and self.backend is not Backend.ENSEMBLE:
            problems.append("artifact: give a repository 'uri' or inline 'files'")
        if self.autoscaling.batching is not None and self.dynamic_batching is None:
            problems.append(
                "autoscaling.batching: tunes dynamic_batching.max_queue_delay_us; add "
                "dynamic_batching or remove autoscaling.batching"
            )
        if problems:
            # One "field: message" per line; the front doors split them into field errors.
            raise ValueError("\n".join(problems))
        return self


def field_errors(loc: tuple[object, ...], msg: str) -> list[tuple[str, str]]:
    """Turn one pydantic error into (field, message) pairs, splitting spec-level problems."""
    msg = msg.removeprefix("Value error, ")
    path = ".".join(str(p) for p in loc if p != "body")
    if path:
        return [(path, msg)]
    out = []
    for line in msg.splitlines():
        field, sep, rest = line.partition(": ")
        out.append((field, rest) if sep and " " not in field else ("spec", line))
    return out
