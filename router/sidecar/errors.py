"""OpenAI-style error bodies for every error path of the sidecar.

Every error leaves as ``{"error": {"message", "type", "param", "code"}}`` with the status an OpenAI
client expects, so its own exception classes (BadRequestError, AuthenticationError, RateLimitError...)
fire. Bad input is always 4xx; a 500 means a bug in Triage, and its body says so without details.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from triage.router.core.errors import TriageProviderError
from triage.scrub import scrub_text
from triage.logging import get_logger

# Upstream failure kinds (triage.router.core.errors.TriageProviderError.kind) -> (status, type, code).
_UPSTREAM: dict[str, tuple[int, str, str]] = {
    "timeout": (504, "upstream_error", "upstream_timeout"),
    "connection": (502, "upstream_error", "upstream_unreachable"),
    "server": (502, "upstream_error", "upstream_server_error"),
    "auth": (502, "upstream_error", "upstream_auth_failed"),
    "not_found": (502, "upstream_error", "upstream_model_not_found"),
    "rate_limit": (429, "rate_limit_error", "upstream_rate_limited"),
    "bad_request": (400, "invalid_request_error", "upstream_rejected_request"),
    "context_window": (400, "invalid_request_error", "context_length_exceeded"),
}
# Failures caused by the request itself: the upstream's (scrubbed) reason is kept for the client.
_CLIENT_KINDS = frozenset({"bad_request", "context_window"})


class SidecarError(Exception):
    """An error the sidecar answers with; carries the HTTP status and OpenAI error fields."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}


def error_body(message: str, type: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(exc: SidecarError) -> JSONResponse:
    return JSONResponse(error_body(exc.message, exc.type, exc.code, exc.param), status_code=exc.status,
                        headers=exc.headers)


def upstream_error(exc: TriageProviderError) -> SidecarError:
    """The answer for a provider failure the policy could not absorb (no fallback, or it failed too).

    The upstream's own text stays out of the body (a provider may quote the key it was sent, or
    its internals): the client gets what failed, the status and the request id to look it up in
    the ledger. Only a request the upstream rejected as malformed (400) keeps the upstream's reason,
    scrubbed, since the client needs it to fix the request.
    """
    status, type_, code = _UPSTREAM.get(exc.kind, (502, "upstream_error", "upstream_error"))
    text = scrub_text(str(exc) if exc.kind in _CLIENT_KINDS else exc.summary)
    if len(text) > 600:
        text = text[:600] + "..."
    if exc.request_id:
        text += f" (request id {exc.request_id})"
    return SidecarError(status, text, type=type_, code=code)


def _loc_text(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "header", "path", "cookie"):
        parts = parts[1:]
    return ".".join(parts)


def validation_error(exc: RequestValidationError) -> SidecarError:
    errors = list(exc.errors())
    first = errors[0] if errors else {"msg": "invalid request", "loc": (), "type": ""}
    if first.get("type") == "json_invalid":
        detail = (first.get("ctx") or {}).get("error") or "JSON decode error"
        return SidecarError(400, f"the request body is not valid JSON ({detail})", code="invalid_json")
    loc = tuple(first.get("loc", ()))
    if loc == ("body",) and first.get("type") in ("missing", "model_attributes_type", "dict_type"):
        return SidecarError(400, "the request body must be a JSON object", code="invalid_body")
    where = _loc_text(loc)
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return SidecarError(422, f"{where}: {msg}{more}" if where else f"{msg}{more}",
                        code="invalid_value", param=where or None)


# FastAPI's answer when ``json.loads`` fails with something other than a JSONDecodeError.
_UNPARSABLE = "There was an error parsing the body"


def unparsable_body(cause: BaseException | None) -> SidecarError:
    """400 ``invalid_json`` for a body ``json.loads`` could not read (the cause says why)."""
    if isinstance(cause, UnicodeDecodeError):
        why = f"it is not UTF-8 text (byte 0x{cause.object[cause.start]:02x} at offset {cause.start})"
    elif isinstance(cause, RecursionError):
        why = "it is nested too deeply"
    elif isinstance(cause, ValueError) and "digits" in str(cause):
        why = "it holds an integer with too many digits"
    else:
        why = "it cannot be parsed"
    return SidecarError(400, f"the request body is not valid JSON ({why})", code="invalid_json")


def install_error_handlers(app: FastAPI) -> None:
    log = get_logger("triage.sidecar")

    @app.exception_handler(SidecarError)
    async def _sidecar(_: Request, exc: SidecarError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        if status == 404:
            err = SidecarError(404, "no such endpoint (see GET /openapi.json)", code="unknown_url")
        elif status == 405:
            err = SidecarError(405, "method not allowed on this endpoint", code="method_not_allowed")
        elif status == 400 and exc.detail == _UNPARSABLE:
            err = unparsable_body(exc.__cause__)
        else:
            err = SidecarError(status, str(exc.detail), code=None)
        err.headers = dict(exc.headers or {})
        return error_response(err)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal_error", path=request.url.path, error_type=type(exc).__name__,
                  error=scrub_text(str(exc))[:500])
        return JSONResponse(error_body("internal error in the Triage sidecar (see its log)", "server_error",
                                       "internal_error"), status_code=500)
