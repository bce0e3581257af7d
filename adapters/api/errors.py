"""Mapping tritonfleet errors to HTTP answers, in one place.

Every client mistake becomes a 4xx whose JSON body names the field and what to change; the
offending input is never echoed back (a 5 MB name must not come back as a 5 MB error).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from controlplane.errors import (
    Conflict,
    InvalidSpec,
    ModelLoadFailed,
    NotFound,
    NotSupported,
    ServerUnavailable,
    TritonfleetError,
    Unauthorized,
)
from controlplane.spec import field_errors
from controlplane.tenants import Forbidden, QuotaExceeded

log = logging.getLogger(__name__)

STATUS_CODE_MAPPING: dict[type[Exception], int] = {
    InvalidSpec: 422,
    NotFound: 404,
    Conflict: 409,
    Unauthorized: 401,
    Forbidden: 403,
    NotSupported: 501,
    ModelLoadFailed: 502,
    ServerUnavailable: 503,
}


_SUBJECTS = {"TenantCreate": "tenant", "Quota": "quota"}


def validation_details(exc: ValidationError | RequestValidationError) -> list[dict[str, str]]:
    out = []
    for err in exc.errors():
        for field, message in field_errors(tuple(err.get("loc", ())), str(err.get("msg", ""))):
            out.append({"field": field, "message": message[:500]})
    return out


def install(app: FastAPI) -> None:
    @app.exception_handler(InvalidSpec)
    async def _invalid(_: Request, exc: InvalidSpec) -> JSONResponse:
        return JSONResponse(
            status_code=422,
            content={
                "error": f"invalid {exc.subject}",
                "detail": [{"field": p.field, "message": p.message} for p in exc.problems],
            },
        )

    @app.exception_handler(QuotaExceeded)
    async def _quota(_: Request, exc: QuotaExceeded) -> JSONResponse:
        return JSONResponse(
            status_code=403,
            content={
                "error": f"tenant {exc.tenant!r} quota exceeded",
                "detail": [{"field": p.field, "message": p.message} for p in exc.problems],
            },
        )

    @app.exception_handler(ValidationError)
    async def _pydantic(_: Request, exc: ValidationError) -> JSONResponse:
        return JSONResponse(
            status_code=422,
            content={
                "error": "invalid " + _SUBJECTS.get(exc.title, "model spec"),
                "detail": validation_details(exc),
            },
        )

    @app.exception_handler(RequestValidationError)
    async def _request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            status_code=422,
            content={"error": "invalid request", "detail": validation_details(exc)},
        )

    @app.exception_handler(TritonfleetError)
    async def _ours(_: Request, exc: TritonfleetError) -> JSONResponse:
        status = next(
            (code for cls, code in STATUS_CODE_MAPPING.items() if isinstance(exc, cls)), 500
        )
        if status >= 500:
            log.warning("%s: %s", type(exc).__name__, exc)
        headers = {"Retry-After": "1"} if status == 503 else None
        return JSONResponse(status_code=status, content={"error": str(exc)}, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status_code,
            content={"error": str(exc.detail)},
            headers=getattr(exc, "headers", None),
        )
