"""API fuzzing: schemathesis generates requests from the service's own ``/openapi.json``.

Every operation in the document is exercised in-process (WSGI, no network), authenticated with a real
client key, with schema-valid (positive) and schema-violating (negative) requests. schemathesis' checks
assert: no 5xx, every status/content type/body conforms to the document, invalid input is rejected,
valid input is accepted, and authentication is really enforced (``ignored_auth`` re-sends without the
key). The normal run generates at least ``CASES`` requests per backend (CI runs SQLite and PostgreSQL);
``--long`` runs ``LONG_CASES`` with a fresh random seed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance
from sqlalchemy.orm import Session

from security.permissions import ALL_SCOPES
from security.web.api import string_problems
from tests.conftest import ApiClient, issue_key
from tests.operators.factories import TestOperator, make_operator

CASES = 2000
LONG_CASES = 20000
KNOWN_ACCOUNT = "fuzz-known"
APPEAL_TOKEN_SCHEME = "appealToken"
OPERATOR_TOKEN_SCHEME = "operatorToken"
# Ends the token it is sent with: it gets a token of its own, so the other operations keep theirs.
REVOKES_ITS_TOKEN = "DELETE /v1/review/tokens/current"
ALL_PHASES = tuple(Phase)
FAST_PHASES = tuple(p for p in Phase if p not in (Phase.shrink, Phase.explain))
# The document describes itself; schemathesis never fuzzes the schema's own location.
SELF = "GET /openapi.json"

# Rules no JSON Schema can state: a schema-valid request may still be refused with exactly these problem
# codes (and only by these operations). Any other 4xx for a schema-valid request is a contract defect.
# The password policy: common/breached-password list and a strength estimate (zxcvbn).
_POLICY = {"weak_password"}
# Codes are secrets: whether one matches is never a question of syntax.
_WRONG_CODE = {"invalid_totp_code", "second_factor_rejected", "second_factor_required"}
SEMANTIC_REFUSALS: dict[str, set[str]] = {
    "PUT /v1/accounts/{account_id}/password": _POLICY,
    "POST /v1/accounts/{account_id}/totp": {"totp_already_enabled"},
    "POST /v1/accounts/{account_id}/totp/confirm": _WRONG_CODE | {"totp_not_pending", "totp_already_enabled"},
    "POST /v1/accounts/{account_id}/totp/recovery-codes": _WRONG_CODE | {"totp_not_enabled"},
    "DELETE /v1/accounts/{account_id}/totp": _WRONG_CODE | {"totp_not_enabled"},
    "POST /v1/password-resets/confirm": _POLICY | _WRONG_CODE | {"invalid_reset_token"},
    # Relative to the server's clock (events may be late, never from the future).
    "POST /v1/events/login": {"occurred_at_in_future"},
    "POST /v1/events/transaction": {"occurred_at_in_future"},
    "POST /v1/events/account-change": {"occurred_at_in_future"},
    "POST /v1/logins": {"occurred_at_in_future"},
    # Relative to the server's clock: an operator's lock or restriction ends in the future, not too far.
    "POST /v1/review/accounts/{account_id}/locks": {"expires_at_out_of_range"},
    "POST /v1/review/accounts/{account_id}/restriction": {"expires_at_out_of_range"},
    # Whether the value fits the kind (an IP for ``ip``) is a rule across two path parameters.
    "PUT /v1/deny-list/{kind}/{value}": {"invalid_deny_list_value"},
    "DELETE /v1/deny-list/{kind}/{value}": {"invalid_deny_list_value"},
    # Proof of possession: a wrong password or code, or an unknown identifier (one answer for all).
    "POST /v1/freeze": {"freeze_refused"},
    "POST /v1/appeals/{appeal_id}/verifications": {"verification_failed", "code_expired"},
    "POST /v1/appeals/{appeal_id}/password": _POLICY | _WRONG_CODE,
    "POST /v1/appeals/{appeal_id}/totp/confirm": _WRONG_CODE | {"totp_not_pending", "totp_already_enabled"},
}
# What a schema-valid request may legitimately get (schemathesis' own default for positive_data_acceptance).
ACCEPTABLE_FOR_VALID_INPUT = {401, 403, 404, 409, 429}


@dataclass
class FuzzRun:
    cases: int = 0
    by_operation: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def operation_inputs(operation) -> bool:
    """Whether an operation takes any input (path/query/header parameters or a body) to mutate."""
    return bool(list(operation.iter_parameters())) or bool(operation.body)


def operation_spec(document: dict, operation) -> dict:
    """The operation's own object in the document (its parameters, body, security)."""
    return document["paths"][operation.path][operation.method.lower()]


def schema_validator(document: dict, schema: dict):
    """A validator of ``schema``, whose references point into the document's components."""
    return jsonschema_rs.validator_for({**schema, "components": document["components"]})


def body_validator(document: dict, operation):
    """A validator of the operation's JSON body against the document (None when it takes no body)."""
    body = operation_spec(document, operation).get("requestBody", {}).get("content", {}).get("application/json")
    if body is None:
        return None
    return schema_validator(document, body["schema"])


def sent_body_conforms(validator, response) -> bool:
    """Whether the body actually sent (as the server saw it) conforms to the document."""
    raw = response.request.body
    if raw is None:
        return True
    try:
        sent = json.loads(raw)
    except ValueError:  # not JSON at all (a generator's raw bytes): certainly not conforming
        return False
    # Every string and key is NUL-free Unicode (no lone surrogate, which Python's json accepts); checked
    # directly because jsonschema_rs cannot see keys holding lone surrogates the way the server does.
    return not string_problems(sent) and validator.is_valid(sent)


@dataclass
class QueryRules:
    """The document's query parameters of one operation: a validator per name, and which are required."""

    validators: dict[str, Any]
    required: set[str]


def query_rules(document: dict, operation) -> QueryRules:
    params = [p for p in operation_spec(document, operation).get("parameters", []) if p["in"] == "query"]
    return QueryRules(
        validators={p["name"]: schema_validator(document, p["schema"]) for p in params},
        required={p["name"] for p in params if p.get("required")},
    )


def sent_query_conforms(rules: QueryRules, response) -> bool:
    """Whether the query string actually sent conforms to the document.

    A query string holds text only, so a generator's type change can vanish on the way: ``["false"]``
    (an array where a string belongs) is sent as ``account_id=false``, a valid account id. A value
    conforms if its text, or the JSON value that text spells (``0.0``, ``true``), fits its schema."""
    pairs = parse_qsl(urlsplit(response.request.url).query, keep_blank_values=True)
    names = [name for name, _ in pairs]
    if len(names) != len(set(names)) or not rules.required <= set(names):
        return False
    for name, text in pairs:
        validator = rules.validators.get(name)
        if validator is None or string_problems([name, text]):
            return False
        readings: list[Any] = [text]
        try:
            spelled = json.loads(text)
        except ValueError:
            spelled = None
        if spelled is not None and not isinstance(spelled, str):
            readings.append(spelled)
        if not any(validator.is_valid(reading) for reading in readings):
            return False
    return True


def only_the_query_is_negative(case) -> bool:
    """Whether the query is the one input the server sees negated. The only header schemathesis negates
    here is the security scheme's Authorization (the document declares no other header parameter), and
    the harness always sends its own."""
    negative = {location for location, info in case.meta.components.items()
                if info.mode is GenerationMode.NEGATIVE}
    headers = {p.name.lower() for p in case.operation.iter_parameters() if p.location == ParameterLocation.HEADER}
    if headers <= {"authorization"}:
        negative.discard(ParameterLocation.HEADER)
    return negative == {ParameterLocation.QUERY}


def check_semantic_refusal(label: str, response) -> None:
    """The precise form of schemathesis' positive_data_acceptance (see SEMANTIC_REFUSALS)."""
    status = response.status_code
    if status < 400 or status >= 500 or status in ACCEPTABLE_FOR_VALID_INPUT:
        return
    try:
        code = response.json().get("code")
    except ValueError:  # not JSON at all: certainly not a documented refusal
        code = None
    assert code in SEMANTIC_REFUSALS.get(label, set()), (
        f"{label}: schema-valid request refused with {status} {code}: {response.text[:500]}"
    )


@dataclass
class Known:
    """Real resources and credentials the fuzzer aims half its requests at."""

    client_key: str
    path_parameters: dict[str, str] = field(default_factory=dict)
    appeal_token: str | None = None
    operator_token: str | None = None
    spare_operator_token: str | None = None

    def credential(self, operation) -> str:
        spec = operation_spec(operation.schema.raw_schema, operation)
        schemes = {name for requirement in spec.get("security") or [] for name in requirement}
        if APPEAL_TOKEN_SCHEME in schemes and self.appeal_token is not None:
            return self.appeal_token
        if OPERATOR_TOKEN_SCHEME in schemes and self.operator_token is not None:
            return self.spare_operator_token if operation.label == REVOKES_ITS_TOKEN else self.operator_token
        return self.client_key


def fuzz_operation(run: FuzzRun, operation, mode: GenerationMode, known: Known, examples: int, *,
                   derandomize: bool):
    label = operation.label
    key = known.credential(operation)
    validator = body_validator(operation.schema.raw_schema, operation)
    query = query_rules(operation.schema.raw_schema, operation)
    strategy = operation.as_strategy(mode)
    fixed = {p.name: known.path_parameters[p.name] for p in operation.iter_parameters()
             if p.location == "path" and p.name in known.path_parameters}
    if fixed and (mode is GenerationMode.POSITIVE or operation.body):
        # Half the requests target a resource that exists (an account, an appeal), so the fuzzer gets past
        # the 404 and into the service (validation, policy, state) instead of only probing unknown ids.
        strategy = st.one_of(strategy, operation.as_strategy(mode, path_parameters=fixed))

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=derandomize,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
        print_blob=True,
        # The normal run reports the first failing request as generated (with its curl reproduction);
        # shrinking the API's large inputs can take minutes. --long shrinks.
        phases=ALL_PHASES if not derandomize else FAST_PHASES,
    )
    @given(case=strategy)
    def run_case(case) -> None:
        run.cases += 1
        run.by_operation[label] = run.by_operation.get(label, 0) + 1
        response = case.call(headers={"Authorization": f"Bearer {key}"})
        excluded = [positive_data_acceptance]
        if mode is GenerationMode.NEGATIVE and only_the_query_is_negative(case) and sent_query_conforms(
            query, response
        ):
            # The violation did not survive serialisation (see sent_query_conforms): the request the server
            # got is a valid one, which it must not refuse (checked below), not a negative one.
            excluded.append(negative_data_rejection)
        case.validate_response(
            response, headers={"Authorization": f"Bearer {key}"}, excluded_checks=excluded,
            transport_kwargs={"app": operation.app, "headers": {"Authorization": f"Bearer {key}"}},
        )
        # A generator occasionally labels as positive a body the document forbids (seen: a NUL in a
        # free-form key); refusing that is right, so only truly conforming bodies must be accepted.
        conforms = validator is None or sent_body_conforms(validator, response)
        if mode is GenerationMode.POSITIVE and conforms or negative_data_rejection in excluded:
            check_semantic_refusal(label, response)

    try:
        run_case()
    except (Exception, BaseExceptionGroup) as exc:  # collected: every operation is fuzzed, every failure reported
        run.failures.append(f"{label} [{mode.value}]: {exc}")


def operator_tokens(app, operator: TestOperator, clock) -> tuple[str, str]:
    """Two bearer tokens of ``operator`` (each sign-in with a fresh TOTP code: a code counts once)."""
    tokens = []
    for _ in range(2):
        clock.advance(seconds=30)
        response = app.test_client().post("/v1/review/tokens", json={
            "name": operator.name, "password": operator.password, "totp_code": operator.code(clock.now())})
        assert response.status_code in (200, 201), response.get_data(as_text=True)
        tokens.append(response.get_json()["token"])
    return tokens[0], tokens[1]


def known_resources(app, key: str, document: dict, operator: TestOperator | None = None, clock=None) -> Known:
    known = Known(client_key=key, path_parameters={"account_id": KNOWN_ACCOUNT})
    if operator is not None and "/v1/review/tokens" in document["paths"]:
        # The review API with a real admin token, on a real case: the known account locked by hand (and
        # appealed below), so lock, claim, unlock, timeline and appeal operations reach the service.
        known.operator_token, known.spare_operator_token = operator_tokens(app, operator, clock)
        locked = app.test_client().post(f"/v1/review/accounts/{KNOWN_ACCOUNT}/locks", json={"note": "fuzz"},
                                        headers={"Authorization": f"Bearer {known.operator_token}"})
        assert locked.status_code in (200, 201), locked.get_data(as_text=True)
        known.path_parameters["lock_id"] = locked.get_json()["lock_id"]
    if "/v1/appeals" in document["paths"]:
        created = app.test_client().post("/v1/appeals", json={"identifier": KNOWN_ACCOUNT, "statement": "fuzz"})
        assert created.status_code == 202, created.get_data(as_text=True)
        known.path_parameters["appeal_id"] = created.get_json()["appeal_id"]
        known.appeal_token = created.get_json()["appeal_token"]
    return known


def fuzz(app, key: str, target: int, *, derandomize: bool, operator: TestOperator | None = None,
         clock=None) -> FuzzRun:
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    known = known_resources(app, key, schema.raw_schema, operator, clock)
    document_ops = {
        f"{method.upper()} {path}" for path, item in schema.raw_schema["paths"].items() for method in item
    }
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} | {SELF} == document_ops, "every documented operation is fuzzed"
    plans = [
        (op, mode) for op in operations for mode in GenerationMode
        if operation_inputs(op) or mode is GenerationMode.POSITIVE
    ]
    with_inputs = sum(1 for op, _ in plans if operation_inputs(op))
    per_plan = math.ceil(target / with_inputs)
    run = FuzzRun()
    for op, mode in plans:
        # An operation without inputs has exactly one request to make.
        fuzz_operation(run, op, mode, known, per_plan if operation_inputs(op) else 1, derandomize=derandomize)
    return run


@pytest.fixture
def fuzz_key(live_app, engine, clock) -> str:
    """A real key with every scope, and one account that exists (see ``fuzz_operation``).

    The fuzzer runs against ``live_app``: every request commits for real on its own connection, as in
    production, and ``/readyz`` can reach the database (a per-test outer transaction would hold SQLite's
    write lock and make it time out).
    """
    with Session(engine) as session:
        key = issue_key(session, clock, "fuzzer", ALL_SCOPES)
    response = ApiClient(live_app.test_client(), key).put(
        f"/v1/accounts/{KNOWN_ACCOUNT}", json={"email": "known@example.com", "home_country": "DE"}
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    return key


def assert_clean(run: FuzzRun, target: int) -> None:
    assert not run.failures, "\n\n".join(run.failures)
    assert run.cases >= target, f"only {run.cases} cases generated: {run.by_operation}"


@pytest.fixture
def fuzz_operator(live_app, engine, clock) -> TestOperator:
    """An admin operator: the review API is fuzzed with its real bearer token."""
    with Session(engine) as session:
        return make_operator(live_app, session, clock, "fuzz-admin", "admin")


def test_fuzz_every_operation(live_app, fuzz_key, fuzz_operator, clock):
    run = fuzz(live_app, fuzz_key, CASES, derandomize=True, operator=fuzz_operator, clock=clock)
    assert_clean(run, CASES)


@pytest.mark.slow
def test_fuzz_every_operation_long(live_app, fuzz_key, fuzz_operator, clock):
    run = fuzz(live_app, fuzz_key, LONG_CASES, derandomize=False, operator=fuzz_operator, clock=clock)
    assert_clean(run, LONG_CASES)


def test_the_document_itself_is_valid_openapi(client):
    """The one operation the fuzzer skips: the document loads as OpenAPI 3.1 and has no broken references."""
    response = client.get("/openapi.json")
    assert response.status_code == 200
    schema = schemathesis.openapi.from_dict(response.get_json())
    labels = {result.ok().label for result in schema.get_all_operations()}
    assert SELF in labels


@pytest.mark.parametrize(("query", "conforms"), [
    ("account_id=false", True),  # generated as the array ["false"]: sent as a valid account id
    ("min_score=0.0&order=age", True),  # JSON Schema's integer 0
    ("", True),
    ("account_id=j%0C", False),
    ("page=1&page=2", False),
    ("min_score=0.5", False),
    ("unknown=1", False),
    ("account_id=a%00b", False),
])
def test_a_negative_query_is_judged_as_it_was_sent(client, query, conforms):
    from types import SimpleNamespace

    schema = schemathesis.openapi.from_dict(client.get("/openapi.json").get_json())
    operation = schema["/v1/review/queue"]["GET"]
    sent = SimpleNamespace(request=SimpleNamespace(url=f"http://localhost/v1/review/queue?{query}"))
    assert sent_query_conforms(query_rules(schema.raw_schema, operation), sent) is conforms
