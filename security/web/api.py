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
from typing import Annotated, Any, Protocol

from flask import Blueprint, Response, g, request
from pydantic import BaseModel, BeforeValidator, ValidationError
from werkzeug.datastructures import MultiDict

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


#: Patterns that state a rule in words a person can read (``openapi.Trimmed`` registers its own): the
#: error then says that instead of "String should match pattern '^[^\x00]*[^\t...'".
PATTERN_MESSAGES: dict[str, str] = {}


def _message(err: Any) -> str:
    if err["type"] == "string_pattern_mismatch":
        return PATTERN_MESSAGES.get(err.get("ctx", {}).get("pattern", ""), str(err["msg"]))
    return str(err["msg"])


def validation_problem(exc: ValidationError, where: str) -> InvalidInput:
    """Translate pydantic errors; the offending input is never echoed back (it may be a secret)."""
    errors = [
        {"location": where, "field": _loc(err["loc"]), "message": _message(err), "type": err["type"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]
    return InvalidInput(f"{len(errors)} field(s) in the {where} are not valid.", errors=errors)


# PostgreSQL cannot store U+0000 in text and no legitimate field needs it. Refusing it here, for every
# operation and on both backends, keeps a NUL from turning into a 500 deep inside a query; the OpenAPI
# document states the same rule (``openapi.NO_NUL_PATTERN``) so clients and the fuzzer know it. A lone
# surrogate (``"\\ud800"``: Python's json accepts it, it is no character and has no UTF-8 form) is refused
# the same way, wherever it is, before any model sees the body.
NUL = "\x00"
NUL_MESSAGE = "NUL characters (U+0000) are not allowed"
SURROGATE_MESSAGE = "Not valid Unicode: a lone surrogate (U+D800-U+DFFF) is not a character"


def _string_problem(text: str) -> tuple[str, str] | None:
    if NUL in text:
        return "string_nul", NUL_MESSAGE
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "string_unicode", SURROGATE_MESSAGE
    return None


def string_problems(data: Any, path: tuple[int | str, ...] = ()) -> list[tuple[str, str, str]]:
    """``(dotted path, type, message)`` of every string (object key or value) in ``data`` that holds a NUL
    character or a lone surrogate."""
    if isinstance(data, str):
        problem = _string_problem(data)
        return [(_loc(path), *problem)] if problem else []
    found: list[tuple[str, str, str]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            problem = _string_problem(str(key))
            if problem:
                found.append((_loc((*path, key)), *problem))
            found.extend(string_problems(value, (*path, key)))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found.extend(string_problems(value, (*path, index)))
    return found


def _refuse_bad_strings(data: Any, where: str) -> None:
    bad = string_problems(data)
    if bad:
        errors = [{"location": where, "field": name, "message": message, "type": kind} for name, kind, message in bad]
        raise InvalidInput(f"{len(errors)} field(s) in the {where} are not valid.", errors=errors)


def validate(model: type[BaseModel], data: Any, where: str) -> BaseModel:
    """``data`` from a query string or a form (text only: ``"5"`` is read as the number 5)."""
    _refuse_bad_strings(data, where)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_problem(exc, where) from None


def single_values(args: MultiDict[str, str]) -> dict[str, str]:
    """A query string's parameters, each given once: ``?page=1&page=2`` is ambiguous, so it is refused
    (422, type ``repeated_parameter``) instead of silently taking one of the two."""
    repeated = {name: len(values) for name, values in args.lists() if len(values) > 1}
    if repeated:
        raise InvalidInput(f"{len(repeated)} field(s) in the query are not valid.", errors=[
            {"location": "query", "field": name, "message": f"Given {times} times; give it once",
             "type": "repeated_parameter"}
            for name, times in repeated.items()
        ])
    return args.to_dict()


def _integral_number(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


#: An integer body field. JSON Schema counts ``5.0`` as the integer 5, pydantic's strict mode would not.
JsonInt = Annotated[int, BeforeValidator(_integral_number)]


def validate_json(model: type[BaseModel], data: Any, where: str, raw: bytes | str | None = None) -> BaseModel:
    """``data``, a parsed JSON document (``raw``: its text, if at hand), as ``model``, with JSON's own types.

    pydantic's strict JSON mode takes every value as the type the document states and nothing else: a
    number is no date-time (``"occurred_at": 0`` is not 1970), a string no number, ``"yes"`` no boolean;
    an enum or a date-time is its JSON string. Python's lax mode would convert all of those.
    """
    _refuse_bad_strings(data, where)
    try:
        return model.model_validate_json(raw if raw is not None else json.dumps(data), strict=True)
    except ValidationError as exc:
        if any(err["type"] == "json_invalid" for err in exc.errors(include_url=False)):
            # json.loads accepted the text and no string is unfit: no other input gets here.
            raise BadRequest("The request body is not valid JSON.") from None
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
                kwargs["body"] = validate_json(body, parse_json_body(), "body", request.get_data(cache=True))
            if query is not None:
                kwargs["query"] = validate(query, single_values(request.args), "query")
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
