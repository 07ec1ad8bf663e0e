"""Access control for every registered operation, derived from ``/openapi.json`` (not from a hand list).

For each operation that declares a security requirement: no key -> 401, a malformed/unknown/revoked key
-> 401, a valid key holding every scope but the required one -> 403; authentication is decided before
the body is even parsed (an unauthenticated caller learns nothing from validation errors). Operations
without a security requirement must be on the explicit public list below, with the reason, and every URL
rule the app serves must be either a documented operation or a known non-API route.
"""

from __future__ import annotations

import re
import uuid

import pytest

from security.audit.services import AuditLog
from security.clients.services import ClientService
from security.entropy import SystemEntropy
from security.permissions import ALL_SCOPES
from tests.conftest import issue_key

# Operations anyone may call, and why. A new unauthenticated operation must be added here on purpose.
PUBLIC_OPERATIONS = {
    "GET /healthz": "liveness probe for the orchestrator; reveals nothing",
    "GET /readyz": "readiness probe; reveals only ready / not ready and the schema revision",
    "GET /openapi.json": "the public API contract",
    "POST /v1/password-resets": "the user forgot the password: always 202, same body and timing (enumeration-tested)",
    "POST /v1/password-resets/confirm": "authorised by the 256-bit single-use reset token itself",
    "POST /v1/appeals": "the locked-out user appeals: always 202 with an appeal token (enumeration-tested)",
    "POST /v1/freeze/codes": "the user asks for a freeze code: always 202 (enumeration-tested)",
    "POST /v1/freeze": "authorised by the account's password or a freeze code in the body (one refusal answer)",
    "POST /v1/review/tokens": "operator sign-in: authorised by the operator's password and TOTP code in the body",
}
# Security schemes this test knows how to exercise.
CLIENT_KEY = "clientKey"
APPEAL_TOKEN = "appealToken"
OPERATOR_TOKEN = "operatorToken"
# URL rules served outside the JSON API (not in the document), and why.
NON_API_ROUTES = {
    "/metrics": "Prometheus scrape endpoint (network-restricted in deployment; counts only, no secrets)",
    "/static/<path:filename>": "Flask's static files",
}
PARAM_VALUES = {"account": "acct-1", "uuid": str(uuid.UUID(int=1)), "int": "1"}
_PARAM = re.compile(r"\{([^}]+)\}")


def documented_operations(client) -> list[tuple[str, str, dict]]:
    document = client.get("/openapi.json").get_json()
    return [
        (method.upper(), path, spec)
        for path, item in document["paths"].items()
        for method, spec in item.items()
    ]


def concrete_path(path: str, spec: dict) -> str:
    """Fill path parameters with values of the right shape (so the route matches and auth is reached)."""
    values = {}
    for param in spec.get("parameters", []):
        if param["in"] == "path":
            schema = param["schema"]
            kind = "uuid" if schema.get("format") == "uuid" else "int" if schema.get("type") == "integer" else "account"
            values[param["name"]] = schema["enum"][0] if "enum" in schema else PARAM_VALUES[kind]
    return _PARAM.sub(lambda m: values.get(m.group(1), PARAM_VALUES["account"]), path)


def send(client, method: str, path: str, spec: dict, key: str | None):
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    if "requestBody" in spec:
        # Not a valid body on purpose: a 401/403 proves authentication ran before validation.
        return client.open(path, method=method, headers=headers, json={"unexpected": True})
    return client.open(path, method=method, headers=headers)


def schemes(spec: dict) -> set[str]:
    requirements = spec.get("security") or []
    found = {name for req in requirements for name in req}
    assert found <= {CLIENT_KEY, APPEAL_TOKEN, OPERATOR_TOKEN}, f"unknown security scheme {found}: extend this test"
    return found


def required_scopes(spec: dict) -> list[str]:
    if CLIENT_KEY not in schemes(spec):
        return []
    return [scope for req in spec["security"] for scope in req[CLIENT_KEY]]


def assert_problem(response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    if code is not None:
        assert response.get_json()["code"] == code


def test_every_operation_is_protected_or_deliberately_public(client):
    unprotected = {f"{m} {p}" for m, p, spec in documented_operations(client) if not spec.get("security")}
    assert unprotected == set(PUBLIC_OPERATIONS)


def test_every_served_route_is_documented_or_known(app, client):
    documented = {re.sub(r"\{[^}]+\}", "{}", p) for _, p, _ in documented_operations(client)}
    # The operators' web console is HTML for people (session cookie + CSRF), not part of the JSON API;
    # tests/console and tests/browser cover its access control.
    served = {re.sub(r"<[^>]+>", "{}", rule.rule) for rule in app.url_map.iter_rules()
              if not rule.rule.startswith("/console")}
    known = {re.sub(r"<[^>]+>", "{}", route) for route in NON_API_ROUTES}
    assert served - documented - known == set()


def test_no_key_or_a_bad_key_is_401(client, db_session, clock):
    revoked_key = issue_key(db_session, clock, "revoked", ALL_SCOPES)
    ClientService(db_session, clock=clock, entropy=SystemEntropy(), audit=AuditLog(db_session, clock=clock)).revoke(
        "revoked", actor="test"
    )
    db_session.commit()
    bad_keys = [None, "", "not-a-key", "fg_00000000_" + "x" * 43, revoked_key]
    checked = 0
    for method, path, spec in documented_operations(client):
        # Client keys and operator tokens answer 401 `unauthenticated`; appeal tokens have their own test below.
        if not schemes(spec) & {CLIENT_KEY, OPERATOR_TOKEN}:
            continue
        url = concrete_path(path, spec)
        for key in bad_keys:
            response = send(client, method, url, spec, key)
            assert_problem(response, 401, "unauthenticated")
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        checked += 1
    assert checked > 0


def test_a_key_without_the_scope_is_403(client, db_session, clock):
    checked = 0
    for method, path, spec in documented_operations(client):
        scopes = required_scopes(spec)
        if not scopes:
            continue
        others = [scope for scope in ALL_SCOPES if scope not in scopes]
        key = issue_key(db_session, clock, f"lacks-{method}-{path}"[:60], others)
        response = send(client, method, concrete_path(path, spec), spec, key)
        assert_problem(response, 403, "insufficient_scope")
        checked += 1
    assert checked > 0


@pytest.mark.parametrize("scheme", ["Basic", "Token", "bearer"])
def test_only_the_bearer_scheme_carries_a_key(client, db_session, clock, scheme):
    key = issue_key(db_session, clock, "scheme", ALL_SCOPES)
    response = client.get("/v1/accounts/acct-1", headers={"Authorization": f"{scheme} {key}"})
    if scheme.lower() == "bearer":
        assert response.status_code == 404  # authenticated (the scheme is case-insensitive); no such account
    else:
        assert_problem(response, 401, "unauthenticated")


def test_a_key_with_the_scope_gets_past_authorization(client, db_session, clock):
    """The positive control: with exactly the required scope, no operation answers 401 or 403."""
    checked = 0
    for method, path, spec in documented_operations(client):
        scopes = required_scopes(spec)
        if not scopes:
            continue
        key = issue_key(db_session, clock, f"has-{method}-{path}"[:60], scopes)
        response = send(client, method, concrete_path(path, spec), spec, key)
        assert response.status_code not in (401, 403), response.get_data(as_text=True)
        checked += 1
    assert checked > 0


def test_keys_are_stored_hashed(db_session, clock):
    from sqlalchemy import select

    from security.clients.models import ServiceClient

    key = issue_key(db_session, clock, "hashed", ALL_SCOPES)
    stored = db_session.scalar(select(ServiceClient).where(ServiceClient.name == "hashed"))
    assert key not in repr(vars(stored))
    # fg_<prefix>_<secret>: the secret itself may contain "_", so split only twice.
    secret = key.split("_", 2)[2]
    assert len(secret) >= 43
    assert secret not in (stored.key_hash or "")


def test_appeal_tokens_open_only_their_own_appeal(app, client):
    """IDOR: appeal A's token on appeal B, a made-up token, no token: one 401 answer, for every operation
    that takes an appeal token (derived from the document)."""
    operations = [(m, p, spec) for m, p, spec in documented_operations(client) if APPEAL_TOKEN in schemes(spec)]
    if not operations:
        pytest.skip("no operation takes an appeal token")
    appeals = [client.post("/v1/appeals", json={"identifier": f"someone-{n}", "statement": "not me"}).get_json()
               for n in range(2)]
    (a, b) = appeals
    answers = set()
    for method, path, spec in operations:
        url = path.replace("{appeal_id}", b["appeal_id"])
        for token in (a["appeal_token"], "x" * 43, None):
            response = send(client, method, url, spec, token)
            assert_problem(response, 401)
            answers.add((response.get_json()["code"], response.get_json()["title"]))
        # The positive control: B's own token passes authentication on B.
        assert send(client, method, url, spec, b["appeal_token"]).status_code != 401
    assert len(answers) == 1, f"the refusals differ: {answers}"
