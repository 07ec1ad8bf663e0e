"""Declaring JSON operations once: routing, authentication, validation, rendering and OpenAPI.

    @operation(bp, "/v1/accounts/<account_id>", method="PUT", body=AccountIn, response=AccountOut,
               auth=ClientScope(Scope.ACCOUNTS_WRITE), summary="Create or update an account profile")
    def put_account(account_id: str, body: AccountIn) -> AccountOut: ...

The same pydantic models that validate requests generate ``/openapi.json``, so the contract cannot drift.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from flask import Blueprint, Response, g, request
from pydantic import BaseModel, ValidationError

from security.errors import BadRequest, FoxguardError, InvalidInput, PayloadTooLarge

JSON_MEDIA_TYPES = ("application/json",)


class UnsupportedMediaType(BadRequest):
    status = 415
    code = "unsupported_media_type"
    title = "Send the body as application/json"


class Authenticator(Protocol):
    """Who may call an operation."""

    def authenticate(self) -> str:
        """Check the request's credentials; return the actor name for audit; raise 401/403 otherwise."""
        ...

    def openapi_security(self) -> list[dict[str, list[str]]]:
        """The OpenAPI security requirement of the operation."""
        ...

    def describe(self) -> str:
        """A short human description (shown in the OpenAPI operation description)."""
        ...


@dataclass
class Operation:
    method: str
    rule: str
    endpoint: str
    summary: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    auth: Authenticator | None = None
    tags: Sequence[str] = ()
    # Extra statuses worth documenting, e.g. {409: "event_id reused with a different body"}.
    errors: dict[int, str] = field(default_factory=dict)
    description: str | None = None
    response_media_type: str = "application/json"
    # Other success statuses returning the same body (e.g. 201 when an upsert created the resource).
    also: Sequence[int] = ()


REGISTRY: list[Operation] = []


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json_body() -> Any:
    """The request body as JSON: 415 for another media type, 400 for malformed or absurdly nested JSON."""
    if request.mimetype not in JSON_MEDIA_TYPES and not request.mimetype.endswith("+json"):
        raise UnsupportedMediaType("The request body must be JSON (Content-Type: application/json).")
    raw = request.get_data(cache=True)
    try:
        text = raw.decode("utf-8")
        return json.loads(text, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadRequest("The request body is not valid JSON.") from exc


def _loc(parts: Sequence[int | str]) -> str:
    return ".".join(str(p) for p in parts) or "body"


def validation_problem(exc: ValidationError, where: str) -> InvalidInput:
    """Translate pydantic errors; the offending input is never echoed back (it may be a secret)."""
    errors = [
        {"location": where, "field": _loc(err["loc"]), "message": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_input=False, include_context=False)
    ]
    return InvalidInput(f"{len(errors)} field(s) in the {where} are not valid.", errors=errors)


# PostgreSQL cannot store U+0000 in text and no legitimate field needs it. Refusing it here, for every
# operation and on both backends, keeps a NUL from turning into a 500 deep inside a query; the OpenAPI
# document states the same rule (``openapi.NO_NUL_PATTERN``) so clients and the fuzzer know it.
NUL = "\x00"
NUL_MESSAGE = "NUL characters (U+0000) are not allowed"


def nul_fields(data: Any, path: tuple[int | str, ...] = ()) -> list[str]:
    """Dotted paths of every string (object key or value) in ``data`` that contains a NUL character."""
    if isinstance(data, str):
        return [_loc(path)] if NUL in data else []
    found: list[str] = []
    if isinstance(data, dict):
        for key, value in data.items():
            if NUL in str(key):
                found.append(_loc((*path, key)))
            found.extend(nul_fields(value, (*path, key)))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found.extend(nul_fields(value, (*path, index)))
    return found


def validate(model: type[BaseModel], data: Any, where: str) -> BaseModel:
    bad = nul_fields(data)
    if bad:
        errors = [{"location": where, "field": name, "message": NUL_MESSAGE, "type": "string_nul"} for name in bad]
        raise InvalidInput(f"{len(errors)} field(s) in the {where} are not valid.", errors=errors)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_problem(exc, where) from None


#: ``g`` attribute: a check the authenticator left for the end of the operation (``security.clients.auth``:
#: whether a key recognised from the cache is revoked, when the use case did not check it in its own
#: transaction). It runs before any answer, success or client error, is rendered.
OWED_AUTH_CHECK = "owed_auth_check"


def _settle_authentication() -> None:
    check: Callable[[], None] | None = g.get(OWED_AUTH_CHECK)
    if check is not None:
        check()


def render(result: Any, status: int) -> Response:
    if isinstance(result, Response):
        return result
    if isinstance(result, tuple):
        result, status = result
    if result is None:
        return Response(status=204)
    payload = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
    return Response(json.dumps(payload, separators=(",", ":")), status=status, mimetype="application/json")


def operation(
    bp: Blueprint,
    rule: str,
    *,
    method: str = "GET",
    summary: str,
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    response: type[BaseModel] | None = None,
    status: int = 200,
    auth: Authenticator | None = None,
    tags: Sequence[str] = (),
    errors: dict[int, str] | None = None,
    description: str | None = None,
    also: Sequence[int] = (),
) -> Callable[[Callable[..., Any]], Callable[..., Response]]:
    """Register a JSON operation on ``bp`` (rules are absolute paths; blueprints carry no prefix)."""

    def decorator(fn: Callable[..., Any]) -> Callable[..., Response]:
        @functools.wraps(fn)
        def view(**path: Any) -> Response:
            if auth is not None:
                g.actor = auth.authenticate()
            try:
                return handle(path)
            except FoxguardError:
                _settle_authentication()
                raise

        def handle(path: dict[str, Any]) -> Response:
            kwargs: dict[str, Any] = dict(path)
            bad_path = [name for name, value in path.items() if isinstance(value, str) and NUL in value]
            if bad_path:
                raise InvalidInput("The path is not valid.", errors=[
                    {"location": "path", "field": name, "message": NUL_MESSAGE, "type": "string_nul"}
                    for name in bad_path
                ])
            if body is not None:
                if request.content_length is not None and request.max_content_length is not None and (
                    request.content_length > request.max_content_length
                ):
                    raise PayloadTooLarge(f"The body may be at most {request.max_content_length} bytes.")
                kwargs["body"] = validate(body, parse_json_body(), "body")
            if query is not None:
                kwargs["query"] = validate(query, request.args.to_dict(), "query")
            result = fn(**kwargs)
            _settle_authentication()
            return render(result, status)

        bp.add_url_rule(rule, endpoint=fn.__name__, view_func=view, methods=[method])
        REGISTRY.append(
            Operation(
                method=method,
                rule=rule,
                endpoint=f"{bp.name}.{fn.__name__}",
                summary=summary,
                body=body,
                query=query,
                response=response,
                status=status,
                auth=auth,
                tags=tuple(tags) or (bp.name,),
                errors=dict(errors or {}),
                description=description or (fn.__doc__ or "").strip() or None,
                also=tuple(also),
            )
        )
        return view

    return decorator


_PATH_PARAM = re.compile(r"<(?:(?P<converter>[a-z_]+)(?:\([^)]*\))?:)?(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)>")


def openapi_path(rule: str) -> tuple[str, list[str]]:
    """Flask rule -> OpenAPI path template and the parameter names."""
    names = [m.group("name") for m in _PATH_PARAM.finditer(rule)]
    return _PATH_PARAM.sub(lambda m: "{" + m.group("name") + "}", rule), names
