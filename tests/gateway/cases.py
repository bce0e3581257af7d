"""Inputs and expected outputs of the demo models, shared by the HTTP and gRPC tests."""

from __future__ import annotations

import numpy as np

CASES = {
    # model: (datatype, input, expected output)
    "double_fp32": ("FP32", np.array([[1.5, -2.0, 3.25, 0.0]], dtype=np.float32), lambda x: x * 2),
    "add1_int64": ("INT64", np.array([[1, -7, 2**40, 0]], dtype=np.int64), lambda x: x + 1),
    "echo_bytes": (
        "BYTES",
        np.array([[b"hello", b"two words", "ünï".encode(), b""]], dtype=np.object_),
        lambda x: x,
    ),
}


def check(model: str, out: np.ndarray) -> None:
    _, x, f = CASES[model]
    expected = f(x)
    assert out.shape == expected.shape
    if expected.dtype == np.object_:
        # JSON replies carry BYTES as str, binary replies as bytes
        got = [v.encode() if isinstance(v, str) else bytes(v) for v in out.ravel()]
        assert got == [bytes(v) for v in expected.ravel()]
    else:
        np.testing.assert_array_equal(out, expected)
