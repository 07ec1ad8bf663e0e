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

import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance
from sqlalchemy.orm import Session

from security.permissions import ALL_SCOPES
from security.web.api import string_problems
from tests.conftest import ApiClient, issue_key

CASES = 2000
LONG_CASES = 20000
KNOWN_ACCOUNT = "fuzz-known"
APPEAL_TOKEN_SCHEME = "appealToken"
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


def body_validator(document: dict, operation):
    """A validator of the operation's JSON body against the document (None when it takes no body)."""
    spec = document["paths"][operation.path][operation.method.lower()]
    body = spec.get("requestBody", {}).get("content", {}).get("application/json")
    if body is None:
        return None
    return jsonschema_rs.validator_for({**body["schema"], "components": document["components"]})


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

    def credential(self, operation) -> str:
        spec = operation.schema.raw_schema["paths"][operation.path][operation.method.lower()]
        schemes = {name for requirement in spec.get("security") or [] for name in requirement}
        if APPEAL_TOKEN_SCHEME in schemes and self.appeal_token is not None:
            return self.appeal_token
        return self.client_key


def fuzz_operation(run: FuzzRun, operation, mode: GenerationMode, known: Known, examples: int, *,
                   derandomize: bool):
    label = operation.label
    key = known.credential(operation)
    validator = body_validator(operation.schema.raw_schema, operation)
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
        case.validate_response(
            response, headers={"Authorization": f"Bearer {key}"}, excluded_checks=[positive_data_acceptance],
            transport_kwargs={"app": operation.app, "headers": {"Authorization": f"Bearer {key}"}},
        )
        # A generator occasionally labels as positive a body the document forbids (seen: a NUL in a
        # free-form key); refusing that is right, so only truly conforming bodies must be accepted.
        conforms = validator is None or sent_body_conforms(validator, response)
        if mode is GenerationMode.POSITIVE and conforms:
            check_semantic_refusal(label, response)

    try:
        run_case()
    except (Exception, BaseExceptionGroup) as exc:  # collected: every operation is fuzzed, every failure reported
        run.failures.append(f"{label} [{mode.value}]: {exc}")


def known_resources(app, key: str, document: dict) -> Known:
    known = Known(client_key=key, path_parameters={"account_id": KNOWN_ACCOUNT})
    if "/v1/appeals" in document["paths"]:
        created = app.test_client().post("/v1/appeals", json={"identifier": KNOWN_ACCOUNT, "statement": "fuzz"})
        assert created.status_code == 202, created.get_data(as_text=True)
        known.path_parameters["appeal_id"] = created.get_json()["appeal_id"]
        known.appeal_token = created.get_json()["appeal_token"]
    return known


def fuzz(app, key: str, target: int, *, derandomize: bool) -> FuzzRun:
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    known = known_resources(app, key, schema.raw_schema)
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


def test_fuzz_every_operation(live_app, fuzz_key):
    run = fuzz(live_app, fuzz_key, CASES, derandomize=True)
    assert_clean(run, CASES)


@pytest.mark.slow
def test_fuzz_every_operation_long(live_app, fuzz_key):
    run = fuzz(live_app, fuzz_key, LONG_CASES, derandomize=False)
    assert_clean(run, LONG_CASES)


def test_the_document_itself_is_valid_openapi(client):
    """The one operation the fuzzer skips: the document loads as OpenAPI 3.1 and has no broken references."""
    response = client.get("/openapi.json")
    assert response.status_code == 200
    schema = schemathesis.openapi.from_dict(response.get_json())
    labels = {result.ok().label for result in schema.get_all_operations()}
    assert SELF in labels
