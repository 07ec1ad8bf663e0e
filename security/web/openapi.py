"""``/openapi.json``: generated from the operations registered with :func:`security.web.api.operation`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from annotated_types import GroupedMetadata
from flask import Blueprint, Flask, Response, current_app, json
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, models_json_schema
from pydantic_core import core_schema

from security.types import ACCOUNT_ID_PATTERN
from security.web.api import PATTERN_MESSAGES, REGISTRY, Operation, openapi_path, operation

bp = Blueprint("openapi", __name__)

REF_TEMPLATE = "#/components/schemas/{model}"
_CONVERTER_OF = re.compile(
    r"<(?:(?P<converter>[a-z_]+)(?:\((?P<args>[^)]*)\))?:)?(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)>"
)
PARAM_SCHEMAS: dict[str, dict[str, Any]] = {
    "account": {"type": "string", "pattern": ACCOUNT_ID_PATTERN, "maxLength": 64},
    "uuid": {"type": "string", "format": "uuid"},
    "int": {"type": "integer", "minimum": 0},
}
# Every string is refused when it contains U+0000 (``api.string_problems``); strings without a pattern of their
# own say so in the document. A field with its own pattern must exclude NUL in that pattern.
NO_NUL_PATTERN = "^[^\\x00]*$"
# The white space ``Trimmed`` drops around free text (Unicode White_Space), by code point. Patterns list
# them (``TRIMMED_SPACE``, for a ``[...]`` class) because ``\s`` differs between regex dialects (ECMA counts
# U+FEFF, Python U+001C-U+001F; neither is trimmed).
_WHITE_SPACE = (*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F,
                0x205F, 0x3000)
TRIMMED_SPACE = "".join(f"\\u{c:04x}" for c in _WHITE_SPACE)


#: Any JSON value with no NUL in any string or key, at any depth: what a free-form input value (a batch item,
#: validated one by one by its operation) may hold. A component, since it refers to itself.
ANY_JSON = "NulFreeJson"
ANY_JSON_SCHEMA: dict[str, Any] = {
    "description": "Any JSON value; no string or object key anywhere in it contains U+0000",
    "anyOf": [
        {"type": ["null", "boolean", "number"]},
        {"type": "string", "pattern": NO_NUL_PATTERN},
        {"type": "array", "items": {"$ref": REF_TEMPLATE.format(model=ANY_JSON)}},
        {"type": "object", "propertyNames": {"pattern": NO_NUL_PATTERN},
         "additionalProperties": {"$ref": REF_TEMPLATE.format(model=ANY_JSON)}},
    ],
}

#: A free-form input value, stated as :data:`ANY_JSON_SCHEMA` in the document.
AnyJson = Annotated[Any, WithJsonSchema({"$ref": REF_TEMPLATE.format(model=ANY_JSON)})]


class ContractJsonSchema(GenerateJsonSchema):
    """Pydantic's JSON Schema plus the rules ``security.web.api`` enforces on every operation."""

    def dict_schema(self, schema: core_schema.DictSchema) -> JsonSchemaValue:
        json_schema = super().dict_schema(schema)
        if "patternProperties" in json_schema and "additionalProperties" not in json_schema:
            # Pydantic states the key rule as patternProperties; only with additionalProperties false does
            # that forbid other keys (and generators such as hypothesis-jsonschema honour it).
            json_schema["additionalProperties"] = False
        else:
            json_schema.setdefault("propertyNames", {"pattern": NO_NUL_PATTERN})
        return json_schema

    def str_schema(self, schema: core_schema.StringSchema) -> JsonSchemaValue:
        json_schema = super().str_schema(schema)
        if "pattern" not in json_schema and "format" not in json_schema:
            json_schema["pattern"] = NO_NUL_PATTERN
        return json_schema


def trimmed_length_pattern(min_length: int) -> str:
    """The rule of a field whose value is trimmed before its length is checked, as a pattern: at least
    ``min_length`` characters from its first to its last non-space character, and no NUL anywhere."""
    if min_length <= 0:
        return NO_NUL_PATTERN
    solid, any_ = f"[^{TRIMMED_SPACE}\\x00]", "[^\\x00]"
    if min_length == 1:
        return f"^{any_}*{solid}{any_}*$"
    return f"^{any_}*{solid}{any_}{{{min_length - 2},}}{solid}{any_}*$"


_TRIMMED_CHARACTERS = "".join(map(chr, _WHITE_SPACE))


def _trim(value: str) -> str:
    return value.strip(_TRIMMED_CHARACTERS)


@dataclass(frozen=True)
class Trimmed(GroupedMetadata):
    """Free text whose surrounding white space is dropped, stated exactly in the document:
    ``note: Annotated[str, Trimmed(2000, min_length=3)]``.

    ``max_length`` counts the text as sent; ``min_length`` its characters from the first to the last
    non-space one (:func:`trimmed_length_pattern`, which pydantic checks on the text as sent, as any
    client reading the document would). Only then is the text trimmed (the characters of
    ``TRIMMED_SPACE``). No model trims implicitly (``str_strip_whitespace``): a value trimmed first is no
    longer checked against what the document states (``" a1"`` against an account id's pattern, a
    2,001-character note ending in a space against maxLength 2000), so a field with a pattern of its own
    is taken as sent.
    """

    max_length: int
    min_length: int = 0

    def __post_init__(self) -> None:
        if self.min_length:
            PATTERN_MESSAGES.setdefault(
                trimmed_length_pattern(self.min_length),
                "Should have a character other than white space" if self.min_length == 1 else
                f"Should have at least {self.min_length} characters, not counting white space around them",
            )

    def __iter__(self) -> Iterator[object]:
        yield StringConstraints(max_length=self.max_length, pattern=trimmed_length_pattern(self.min_length))
        yield AfterValidator(_trim)


PROBLEM_REF = REF_TEMPLATE.format(model="Problem")
# Hooks other slices use to add top-level sections (e.g. the `webhooks` payload schemas).
EXTRA_SECTIONS: list[Any] = []


class Problem(BaseModel):
    """RFC 9457 problem details, as every error is returned."""

    model_config = ConfigDict(title="Problem")

    type: str = Field(description="Stable URI identifying the problem kind")
    title: str
    status: int
    code: str = Field(description="Stable machine-readable code (the last segment of `type`)")
    detail: str | None = None
    request_id: str | None = None
    errors: list[dict[str, Any]] | None = Field(default=None, description="Per-field validation errors")
    retry_after: int | None = None


STANDARD_ERRORS = {
    400: "Malformed request (e.g. invalid JSON)",
    413: "Body too large",
    415: "Body is not JSON",
    422: "Body or query parameters fail validation",
}


def _problem_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": PROBLEM_REF}}},
    }


def param_schema(converter: str | None, args: str | None) -> dict[str, Any]:
    """JSON Schema of a path parameter, from its Werkzeug converter (``any(a, b)`` becomes an enum)."""
    if converter == "any" and args:
        return {"type": "string", "enum": [a.strip().strip("'\"") for a in args.split(",")]}
    return PARAM_SCHEMAS.get(converter or "", {"type": "string", "pattern": NO_NUL_PATTERN})


def _operation_spec(
    op: Operation, params: list[tuple[str, str | None, str | None]], refs: dict[type[BaseModel], str],
    components: dict[str, Any],
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "operationId": op.endpoint.replace(".", "_"),
        "summary": op.summary,
        "tags": list(op.tags),
        "responses": {},
    }
    if op.description:
        spec["description"] = op.description
    parameters: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": param_schema(converter, args),
        }
        for name, converter, args in params
    ]
    if op.query is not None:
        # The query model's own component: the enums its properties refer to are components too.
        schema = components[refs[op.query].rsplit("/", 1)[1]]
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            parameters.append({"name": name, "in": "query", "required": name in required, "schema": prop})
    if parameters:
        spec["parameters"] = parameters
    if op.body is not None:
        spec["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": refs[op.body]}}},
        }
    ok: dict[str, Any] = {"description": op.summary}
    if op.response is not None:
        ok["content"] = {op.response_media_type: {"schema": {"$ref": refs[op.response]}}}
    for success in (op.status, *op.also):
        spec["responses"][str(success)] = ok
    errors: dict[int, str] = {}
    if op.body is not None or op.query is not None:
        errors.update(STANDARD_ERRORS)
    if op.auth is not None:
        errors[401] = "Missing, invalid or revoked credentials"
        errors[403] = "Credentials lack the required permission"
        spec["security"] = op.auth.openapi_security()
    if params:
        errors[404] = "No such resource"
    errors[503] = "Database unavailable; nothing was changed"
    errors.update(op.errors)
    for status, description in sorted(errors.items()):
        spec["responses"][str(status)] = _problem_response(description)
    spec["responses"]["default"] = _problem_response("Unexpected error")
    return spec


def build_openapi(app: Flask) -> dict[str, Any]:
    """The OpenAPI 3.1 document for every registered operation that ``app`` serves."""
    served = set(app.view_functions)
    operations = [op for op in REGISTRY if op.endpoint in served]
    models: list[type[BaseModel]] = [Problem]
    for op in operations:
        for model in (op.body, op.query, op.response):
            if model is not None and model not in models:
                models.append(model)
    # Pydantic names each component and disambiguates models that share a class name (two slices' own
    # ``PasswordIn``); operations refer to whatever name it chose, so no schema can shadow another.
    key_map, defs = models_json_schema(
        [(m, "validation") for m in models], ref_template=REF_TEMPLATE, schema_generator=ContractJsonSchema
    )
    refs = {model: key_map[(model, "validation")]["$ref"] for model in models}
    components: dict[str, Any] = {**defs.get("$defs", {}), ANY_JSON: ANY_JSON_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        path, _ = openapi_path(op.rule)
        params = [(m.group("name"), m.group("converter"), m.group("args")) for m in _CONVERTER_OF.finditer(op.rule)]
        paths.setdefault(path, {})[op.method.lower()] = _operation_spec(op, params, refs, components)
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Foxguard account-security API",
            "version": "1.0.0",
            "description": "Risk scoring, locks, appeals and recovery for wallet accounts. "
            "Errors are RFC 9457 application/problem+json.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": components,
            "securitySchemes": {
                "clientKey": {"type": "http", "scheme": "bearer", "description": "Service client API key"},
            },
        },
    }
    for extend in EXTRA_SECTIONS:
        extend(document)
    return document


@operation(bp, "/openapi.json", summary="This API's OpenAPI document", tags=["operations"])
def openapi_document() -> Response:
    cached = current_app.extensions.get("foxguard.openapi")
    if cached is None:
        cached = json.dumps(build_openapi(current_app))
        current_app.extensions["foxguard.openapi"] = cached
    return Response(cached, mimetype="application/json")
