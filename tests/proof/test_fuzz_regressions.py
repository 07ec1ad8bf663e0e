"""Defects the fuzzer found, pinned as plain examples (they must stay fixed whatever the fuzzer draws)."""

from __future__ import annotations

import json

import pytest

from security.db import make_engine
from security.web.openapi import NO_NUL_PATTERN


def problem_fields(response, status: int, code: str) -> set[str]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["code"] == code
    return {error["field"] for error in body.get("errors") or []}


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        # Was a 500 on PostgreSQL (text cannot hold U+0000) while SQLite stored it.
        ("/v1/accounts/nul1", {"email": "a\x00b@example.com"}, "email"),
        ("/v1/accounts/nul1", {"identity_document": "AB\x0012CD"}, "identity_document"),
        ("/v1/accounts/nul1/password", {"password": "violet\x00harbour-engine-42"}, "password"),
        # Object keys too (they are echoed as field names, never as values).
        ("/v1/accounts/nul1", {"email\x00": "a@example.com"}, "email\x00"),
    ],
)
def test_nul_characters_are_a_422_on_both_backends(api, path, body, field):
    api.put("/v1/accounts/nul1", json={"home_country": "DE"})
    response = api.put(path, json=body)
    assert problem_fields(response, 422, "invalid_input") == {field}
    assert "violet" not in response.get_data(as_text=True)


def test_nul_inside_nested_values_is_found(api):
    from security.web.api import string_problems

    assert [p[:2] for p in string_problems({"a": [{"b": "x\x00"}, "ok"], "c": "fine"})] == [("a.0.b", "string_nul")]
    assert [p[:2] for p in string_problems(["\x00", {"k\ud800": "\u00e9"}])] == [
        ("0", "string_nul"), ("1.k\ud800", "string_unicode")]
    assert string_problems({"clean": ["x", 1, None, {"y": "z\u00e9\U0001f600"}]}) == []


def body_schema(document: dict, path: str, method: str) -> dict:
    ref = document["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    return document["components"]["schemas"][ref.rsplit("/", 1)[-1]]


def test_the_document_states_the_nul_rule(client):
    document = client.get("/openapi.json").get_json()
    password = body_schema(document, "/v1/accounts/{account_id}/password", "put")["properties"]["password"]
    assert password["pattern"] == NO_NUL_PATTERN


def test_every_operation_refers_to_its_own_models(app, client):
    # Was: components were keyed by class name, so the appeals slice's PasswordIn replaced the accounts
    # slice's in the document and PUT /v1/accounts/{id}/password was described by the wrong schema.
    from security.web.api import REGISTRY, openapi_path

    document = client.get("/openapi.json").get_json()
    checked = 0
    for op in REGISTRY:
        if op.body is None or op.endpoint not in app.view_functions:
            continue
        path, _ = openapi_path(op.rule)
        fields = {info.alias or name for name, info in op.body.model_fields.items()}
        assert set(body_schema(document, path, op.method.lower()).get("properties", {})) == fields, op.rule
        checked += 1
    assert checked > 0


@pytest.mark.parametrize(
    ("document", "status"),
    [
        # Was: the schema promised any 4-64 characters, a hidden validator wanted 4 letters/digits (422).
        ("\u00d1\u00c9B\u008f", 422),
        ("--12--", 422),
        ("ab 12", 201),
        ("C01X00T47", 201),
        ("ab 123-456", 201),
    ],
)
def test_identity_document_rule_is_the_documented_pattern(api, client, document, status):
    import re

    pattern = client.get("/openapi.json").get_json()["components"]["schemas"]["AccountIn"]["properties"][
        "identity_document"
    ]["anyOf"][0]["pattern"]
    response = api.put("/v1/accounts/doc1", json={"identity_document": document})
    assert response.status_code == status, response.get_data(as_text=True)
    assert (re.search(pattern, document) is not None) == (status == 201)


@pytest.mark.parametrize("email", ["a\x1cb@example.com", "a\x85b@example.com", "ab@exa\x7fmple.com"])
def test_control_characters_in_email_are_refused_by_schema_and_server_alike(api, email):
    # Python, Rust and ECMA regexes disagree whether \x1c-\x1f and \x85 are whitespace; the pattern names them.
    assert problem_fields(api.put("/v1/accounts/mail1", json={"email": email}), 422, "invalid_input") == {"email"}


def test_sql_parameters_never_reach_error_messages(settings):
    # An unexpected database error is logged with its statement; bound values (e-mail addresses, password
    # hashes, token digests) must not be part of it.
    engine = make_engine(settings)
    try:
        assert engine.hide_parameters is True
    finally:
        engine.dispose()


def test_login_checks_the_password_exactly_as_typed(api):
    # Was: the login model stripped whitespace from the password (a blank one was a 422 for a schema-valid
    # body, and " secret " was checked as "secret", unlike when the password was set).
    padded = "  violet-harbour-engine-42  "
    api.put("/v1/accounts/pw1", json={"home_country": "DE"})
    assert api.put("/v1/accounts/pw1/password", json={"password": padded}).status_code == 204

    def decision(password: str) -> str:
        response = api.post("/v1/logins", json={"account_id": "pw1", "password": password,
                                                "context": {"ip": "198.51.100.7"}})
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()["decision"]

    assert decision(padded.strip()) == "deny"
    assert decision(padded) != "deny"
    assert api.post("/v1/logins", json={"account_id": "pw1", "password": "   "}).status_code == 200


def _component(document: dict, name: str) -> dict:
    [key] = [k for k in document["components"]["schemas"] if k == name or k.endswith(f"__{name}")]
    return document["components"]["schemas"][key]


@pytest.mark.parametrize(("address", "status"), [("   ", 422), ("\u3000\t", 422), ("  0xabc  ", 200), ("0x a", 200)])
def test_trimmed_fields_state_their_rule_in_the_document(api, client, clock, address, status):
    # Was (--long fuzz): values are trimmed before their length is checked, the document said only
    # minLength 1, so a whitespace-only address the document allows was refused with 422.
    import re

    pattern = _component(client.get("/openapi.json").get_json(), "DestinationIn")["properties"]["address"]["pattern"]
    assert bool(re.fullmatch(pattern, address)) is (status == 200)
    api.put("/v1/accounts/trim1", json={"home_country": "DE"})
    response = api.post("/v1/events/transaction", json={
        "event_id": f"trim-{address.encode().hex()}", "account_id": "trim1", "amount": "5.00",
        "currency": "EUR", "destination": {"address": address}, "occurred_at": clock.now().isoformat()})
    assert response.status_code == status, response.get_json()


def test_a_trimmed_minimum_length_counts_from_the_first_to_the_last_character():
    import re

    from security.web.openapi import trimmed_length_pattern

    three = trimmed_length_pattern(3)
    assert [bool(re.fullmatch(three, v)) for v in ("abc", "  a c ", "ab", " a  ", "   ", "ab\x00c")] == [
        True, True, False, False, False, False]
    assert trimmed_length_pattern(0) == NO_NUL_PATTERN


def test_every_reference_in_the_document_resolves(client):
    # Was (an outside schemathesis run): the review queue's and appeal list's query parameters referred to
    # #/components/schemas/LockKind, QueueOrder ... which the document did not hold, so a client could not
    # know the enum values and the fuzzer skipped those parameters.
    document = client.get("/openapi.json").get_json()

    def refs(node):
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    found = set(refs(document))
    assert "#/components/schemas/LockKind" in found
    for ref in found:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in document["components"]["schemas"], ref
    queue = {p["name"]: p["schema"] for p in document["paths"]["/v1/review/queue"]["get"]["parameters"]}
    kind = queue["kind"]["anyOf"][0]["$ref"].rsplit("/", 1)[1]
    assert "brute_force" in document["components"]["schemas"][kind]["enum"]


def _context(clock, **extra):
    return {"ip": "84.150.20.10", "device_id": "laptop-1", "country": "DE", **extra}


@pytest.mark.parametrize(
    ("path", "change", "field"),
    [
        # Was (an outside schemathesis run): a number where the document says date-time string was read as
        # seconds since 1970 and the event scored as of 1970-01-01 (200).
        ("/v1/events/account-change", {"occurred_at": 0}, "occurred_at"),
        ("/v1/events/account-change", {"occurred_at": 1764000000.5}, "occurred_at"),
        ("/v1/logins", {"context": {"occurred_at": 0}}, "context.occurred_at"),
        # The same lax conversions for other types: a string is no number.
        ("/v1/events/transaction", {"context": {"lat": "52.52", "lon": "13.40"}}, "context.lat"),
    ],
)
def test_json_values_keep_their_json_types(api, clock, path, change, field):
    api.put("/v1/accounts/types1", json={"home_country": "DE"})
    now = clock.now().isoformat()
    bodies = {
        "/v1/events/account-change": {"event_id": f"chg-{field}", "account_id": "types1", "change": "email",
                                      "occurred_at": now, "context": _context(clock)},
        "/v1/logins": {"account_id": "types1", "password": "violet-harbour-engine-42",
                       "context": _context(clock, occurred_at=now)},
        "/v1/events/transaction": {"event_id": f"tx-{field}", "account_id": "types1", "amount": "5.00",
                                   "currency": "EUR", "destination": {"address": "0xabc"}, "occurred_at": now,
                                   "context": _context(clock, lat=52.52, lon=13.40)},
    }
    valid = bodies[path]
    wrong = {**valid, **{k: ({**valid[k], **v} if isinstance(v, dict) else v) for k, v in change.items()}}
    fields = problem_fields(api.post(path, json=wrong), 422, "invalid_input")
    assert field in fields
    assert api.post(path, json=valid).status_code == 200  # the same body with JSON's own types is accepted


def test_a_batch_item_keeps_json_types_too(api, clock):
    api.put("/v1/accounts/types2", json={"home_country": "DE"})
    event = {"type": "account_change", "account_id": "types2", "change": "email",
             "occurred_at": clock.now().isoformat()}
    response = api.post("/v1/events:batch", json={"events": [
        {**event, "event_id": "b-ok"}, {**event, "event_id": "b-num", "occurred_at": 0}]})
    assert response.status_code == 200, response.get_json()
    first, second = response.get_json()["results"]
    assert first["ok"] is True
    assert second["ok"] is False
    assert second["error"]["code"] == "invalid_input"
    assert [(e["location"], e["field"]) for e in second["error"]["errors"]] == [("events.1", "occurred_at")]


def test_lone_surrogates_are_a_422_wherever_they_are(api, clock):
    # Python's json reads "\ud800" as a one-character string that has no UTF-8 form; it is refused by name
    # like a NUL, in a model's field and in a batch item's free-form object alike (nothing is stored).
    fields = problem_fields(api.put("/v1/accounts/sur1", json={"email": "b\udb97@example.com"}), 422,
                            "invalid_input")
    assert fields == {"email"}
    assert api.get("/v1/accounts/sur1").status_code == 404
    event = {"type": "account_change", "event_id": "sur-1", "account_id": "sur1", "change": "email",
             "occurred_at": clock.now().isoformat(), "x\udc00": 1}
    response = api.post("/v1/events:batch", json={"events": [event]})
    assert problem_fields(response, 422, "invalid_input") == {"events.0.x\udc00"}
    body = response.get_json()
    assert body["errors"][0]["type"] == "string_unicode"


@pytest.mark.parametrize(
    ("item", "status"),
    [
        ({"k\x00": 1}, 422),
        ({"a": [1, {"b": "c\x00"}]}, 422),
        ("\x00", 422),
        ({"a": [1, {"b": "c"}], "n": None}, 200),  # schema-valid: the item alone is refused, in the answer
        (7, 200),
    ],
)
def test_a_batch_items_nul_rule_is_in_the_document(api, client, item, status):
    # Was (an outside schemathesis run): batch items were described as anything at all, so a NUL deep in a
    # free-form item was schema-valid for the document while the server refused the body (422).
    import jsonschema_rs

    document = client.get("/openapi.json").get_json()
    schema = body_schema(document, "/v1/events:batch", "post")
    validator = jsonschema_rs.validator_for({**schema, "components": document["components"]})
    body = {"events": [item]}
    assert validator.is_valid(body) is (status == 200)
    response = api.post("/v1/events:batch", json=body)
    assert response.status_code == status, response.get_json()
    if status == 200:
        assert response.get_json()["results"][0]["ok"] is False


@pytest.mark.parametrize(("text", "valid"), [(" ", False), ("\u2003\n", False), (" ok ", True), ("x", True)])
def test_an_operator_reply_is_refused_when_blank_as_the_document_says(client, text, valid):
    # Was (--long fuzz): the reply body carried its own NUL-only pattern, which hid the trimmed rule, so
    # " " was a valid 1-character body for the document and an empty one (422) for the server.
    import re

    from pydantic import ValidationError

    from security.review.appeal_schemas import ReplyIn

    pattern = _component(client.get("/openapi.json").get_json(), "ReplyIn")["properties"]["body"]["pattern"]
    assert bool(re.fullmatch(pattern, text)) is valid
    try:
        ReplyIn.model_validate_json(json.dumps({"body": text}), strict=True)
    except ValidationError:
        accepted = False
    else:
        accepted = True
    assert accepted is valid


def test_no_request_model_trims_a_value_before_checking_it():
    # The class of the defects above and of the review queue's ``account_id=j%0C`` (--long fuzz: trimmed to
    # "j", then accepted although the document's pattern refuses it): a value trimmed before its checks is
    # not checked against what the document states. Free text is ``Trimmed`` (checked as sent, then trimmed).
    from pydantic import BaseModel

    from security.web.api import REGISTRY

    models = {m for op in REGISTRY for m in (op.body, op.query) if m is not None}
    seen: set[type[BaseModel]] = set()
    trimming = []
    while models:
        model = models.pop()
        seen.add(model)
        if model.model_config.get("str_strip_whitespace"):
            trimming.append(model.__name__)
        for name, info in model.model_fields.items():
            if any(getattr(m, "strip_whitespace", None) for m in info.metadata):
                trimming.append(f"{model.__name__}.{name}")
            nested = {arg for arg in getattr(info.annotation, "__args__", (info.annotation,))}
            models |= {arg for arg in nested if isinstance(arg, type) and issubclass(arg, BaseModel)} - seen
    assert len(seen) > 20
    assert not trimming


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/accounts/pad1", {"home_country": " DE"}, "home_country"),
    ("/v1/accounts/pad1", {"email": "ana@example.com\t"}, "email"),
    ("/v1/events/login", {"event_id": "pad-1", "account_id": " pad1", "outcome": "success"}, "account_id"),
])
def test_a_value_with_white_space_around_it_is_checked_as_sent(api, clock, path, body, field):
    # The document's patterns refuse these; the server used to trim them first and accept them.
    if "event_id" in body:
        body = {**body, "occurred_at": clock.now().isoformat()}
    response = api.put(path, json=body) if path.startswith("/v1/accounts") else api.post(path, json=body)
    assert problem_fields(response, 422, "invalid_input") == {field}
