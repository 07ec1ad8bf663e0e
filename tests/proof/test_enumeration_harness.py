"""The enumeration harness itself: it must catch each kind of leak, and pass a flow that has none.

A toy Flask app stands in for the real flows (password reset, appeals, freeze codes), which apply
``probe_enumeration`` in their own tests as they land.
"""

from __future__ import annotations

import time
import uuid

import pytest
from flask import Flask, jsonify, request

from tests.proof.enumeration import mask_fields, probe_enumeration

KNOWN = {"ana@example.com", "ben@example.com"}
# Work both branches do, so that the timing comparison is not between two near-zero numbers.
BASE_WORK_S = 0.0008
LEAKY_EXTRA_WORK_S = 0.0008


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@pytest.fixture
def toy():
    app = Flask("toy")

    def identifier() -> str:
        return (request.get_json() or {}).get("identifier", "")

    @app.post("/fair")
    def fair():
        busy(BASE_WORK_S)
        return jsonify(status="accepted", ticket=uuid.uuid4().hex), 202

    @app.post("/status")
    def status():
        busy(BASE_WORK_S)
        return jsonify(status="accepted"), 202 if identifier() in KNOWN else 404

    @app.post("/header")
    def header():
        busy(BASE_WORK_S)
        response = jsonify(status="accepted")
        if identifier() in KNOWN:
            response.headers["X-Cache"] = "hit"
        return response, 202

    @app.post("/body")
    def body():
        busy(BASE_WORK_S)
        return jsonify(status="accepted" if identifier() in KNOWN else "accepted."), 202

    @app.post("/timing")
    def timing():
        busy(BASE_WORK_S + (LEAKY_EXTRA_WORK_S if identifier() in KNOWN else 0))
        return jsonify(status="accepted"), 202

    client = app.test_client()
    return lambda path: lambda ident: client.post(path, json={"identifier": ident})


def probe(send, tries=60):
    return probe_enumeration(
        send, known=sorted(KNOWN), unknown=["nobody@example.com", "zed@example.com"], tries=tries,
        normalize=mask_fields("ticket"),
    )


def test_a_fair_flow_passes(toy):
    report = probe(toy("/fair"), tries=200)
    report.assert_indistinguishable()
    assert sum(report.known_answers.values()) == sum(report.unknown_answers.values()) == 200


@pytest.mark.parametrize(("path", "reason"), [("/status", "status"), ("/header", "headers"), ("/body", "body")])
def test_answer_leaks_are_caught(toy, path, reason):
    problems = probe(toy(path), tries=10).differences()
    assert any(p.startswith(reason) for p in problems), problems
    with pytest.raises(AssertionError, match="can be told apart"):
        probe(toy(path), tries=10).assert_indistinguishable()


def test_a_timing_leak_is_caught(toy):
    report = probe(toy("/timing"), tries=100)
    # A systematic leak fails every round of re-measurement, and the calmest one is reported.
    assert len(report.rounds) == 3
    assert min(report.rounds) > report.tolerance
    assert report.timing_gap > report.tolerance
    assert any(p.startswith("median latency") for p in report.differences())


def test_unmasked_per_request_values_are_a_difference(toy):
    # Without masking, a random ticket makes every answer unique: the harness does not silently pass that.
    report = probe_enumeration(toy("/fair"), known=sorted(KNOWN), unknown=["nobody@example.com"], tries=5)
    assert report.differences()


def test_known_and_unknown_must_not_overlap(toy):
    with pytest.raises(AssertionError):
        probe_enumeration(toy("/fair"), known=["a"], unknown=["a"], tries=1)
