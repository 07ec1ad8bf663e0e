"""Enumeration harness: does an unauthenticated flow reveal whether an identifier is known?

Usage (from any slice's tests)::

    from tests.proof.enumeration import probe_enumeration

    report = probe_enumeration(
        lambda identifier: client.post("/v1/password-resets", json={"identifier": identifier}),
        known=["ana@example.com"], unknown=["nobody@example.com"],
        normalize=mask_fields("request_id"),   # per-request values that differ for everyone
    )
    report.assert_indistinguishable()

Known and unknown requests are interleaved (ABBA order, after a warm-up) so drift in machine load hits
both sides alike. Every answer is reduced to (status, headers minus ``Date``/``X-Request-Id``, body); all
answers must be one and the same value, and the median latencies must lie within ``tolerance`` (10%) of
each other (a timing gap is re-measured up to three rounds: a leak shows in every one, load does not).
``known``/``unknown`` are cycled, so a flow with per-identifier rate limits can be given many.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import cycle
from typing import Any

TRIES = 200
WARM_UP = 5
TIMING_TOLERANCE = 0.10
TIMING_ATTEMPTS = 3
# Differ on every response, for everyone: never evidence of anything.
IGNORED_HEADERS = frozenset({"date", "x-request-id"})

Answer = tuple[int, tuple[tuple[str, str], ...], bytes]


def mask_fields(*names: str) -> Callable[[bytes], bytes]:
    """A body normaliser for JSON: replace the values of top-level members that are unique per request
    (a fresh appeal id or token, a request id) by a placeholder, keeping their presence and type."""

    def normalize(body: bytes) -> bytes:
        try:
            data = json.loads(body)
        except ValueError:
            return body
        if isinstance(data, dict):
            for name in names:
                if name in data:
                    data[name] = f"<{type(data[name]).__name__}>"
        return json.dumps(data, sort_keys=True).encode()

    return normalize


def observe(response: Any, normalize: Callable[[bytes], bytes] | None) -> Answer:
    """(status, comparable headers, normalised body) of a Werkzeug/Flask test response."""
    headers = tuple(sorted((k.lower(), v) for k, v in response.headers.items() if k.lower() not in IGNORED_HEADERS))
    body = response.get_data()
    if normalize is not None:
        body = normalize(body)
    return response.status_code, headers, body


@dataclass
class EnumerationReport:
    known_answers: dict[Answer, int] = field(default_factory=dict)
    unknown_answers: dict[Answer, int] = field(default_factory=dict)
    known_seconds: list[float] = field(default_factory=list)
    unknown_seconds: list[float] = field(default_factory=list)
    tolerance: float = TIMING_TOLERANCE
    # Timing gap of every round measured (see probe_enumeration).
    rounds: list[float] = field(default_factory=list)

    @property
    def known_median(self) -> float:
        return statistics.median(self.known_seconds)

    @property
    def unknown_median(self) -> float:
        return statistics.median(self.unknown_seconds)

    @property
    def timing_gap(self) -> float:
        """Relative difference of the medians (0.05 = 5%)."""
        slower = max(self.known_median, self.unknown_median)
        return abs(self.known_median - self.unknown_median) / slower if slower else 0.0

    def differences(self) -> list[str]:
        """Human-readable reasons the two populations can be told apart (empty when they cannot)."""
        problems: list[str] = []
        answers = set(self.known_answers) | set(self.unknown_answers)
        if len(answers) > 1:
            problems.extend(_describe(self.known_answers, self.unknown_answers))
        if self.timing_gap > self.tolerance:
            problems.append(
                f"median latency known {self.known_median * 1000:.3f} ms vs unknown "
                f"{self.unknown_median * 1000:.3f} ms ({self.timing_gap:.1%} > {self.tolerance:.0%}; "
                f"gaps of all rounds: {', '.join(f'{gap:.1%}' for gap in self.rounds)})"
            )
        return problems

    def assert_indistinguishable(self) -> None:
        problems = self.differences()
        assert not problems, "known and unknown identifiers can be told apart:\n" + "\n".join(problems)


def _describe(known: dict[Answer, int], unknown: dict[Answer, int]) -> Iterable[str]:
    def parts(answers: dict[Answer, int]) -> tuple[set[int], set[tuple[tuple[str, str], ...]], set[bytes]]:
        return {a[0] for a in answers}, {a[1] for a in answers}, {a[2] for a in answers}

    (ks, kh, kb), (us, uh, ub) = parts(known), parts(unknown)
    if ks != us or len(ks | us) > 1:
        yield f"status: known {sorted(ks)} vs unknown {sorted(us)}"
    if kh != uh or len(kh | uh) > 1:
        yield f"headers: known {sorted(kh)} vs unknown {sorted(uh)}"
    if kb != ub or len(kb | ub) > 1:
        yield f"body: known {[b[:200] for b in kb]} vs unknown {[b[:200] for b in ub]}"


def probe_enumeration(
    send: Callable[[str], Any],
    *,
    known: Sequence[str],
    unknown: Sequence[str],
    tries: int = TRIES,
    normalize: Callable[[bytes], bytes] | None = None,
    tolerance: float = TIMING_TOLERANCE,
    reset: Callable[[], None] | None = None,
    attempts: int = TIMING_ATTEMPTS,
) -> EnumerationReport:
    """Send ``tries`` requests for known and as many for unknown identifiers, interleaved; compare them.

    Different answers are final. A timing gap above ``tolerance`` is measured again, up to ``attempts``
    rounds of ``tries`` each, and the calmest round is reported: a real leak is systematic and shows in
    every round, while a burst of machine load (CI shares its cores) does not repeat on cue.

    ``reset`` (optional) runs before every request and is not timed: e.g. to clear a per-identifier rate
    limit that would otherwise answer 429 to both sides and hide a difference.
    """
    assert known and unknown and not set(known) & set(unknown)
    rounds: list[EnumerationReport] = []
    for _ in range(max(1, attempts)):
        report = _probe_once(send, known, unknown, tries, normalize, tolerance, reset)
        rounds.append(report)
        if report.differences() == [] or len(set(report.known_answers) | set(report.unknown_answers)) > 1:
            break
    best = min(rounds, key=lambda r: r.timing_gap)
    best.rounds = [r.timing_gap for r in rounds]
    return best


def _probe_once(
    send: Callable[[str], Any],
    known: Sequence[str],
    unknown: Sequence[str],
    tries: int,
    normalize: Callable[[bytes], bytes] | None,
    tolerance: float,
    reset: Callable[[], None] | None,
) -> EnumerationReport:
    report = EnumerationReport(tolerance=tolerance)
    known_ids, unknown_ids = cycle(known), cycle(unknown)

    def one(identifier: str, answers: dict[Answer, int], seconds: list[float] | None) -> None:
        if reset is not None:
            reset()
        started = time.perf_counter()
        response = send(identifier)
        elapsed = time.perf_counter() - started
        answer = observe(response, normalize)
        answers[answer] = answers.get(answer, 0) + 1
        if seconds is not None:
            seconds.append(elapsed)

    for _ in range(WARM_UP):
        one(next(known_ids), {}, None)
        one(next(unknown_ids), {}, None)
    for i in range(tries):
        pair = [(next(known_ids), report.known_answers, report.known_seconds),
                (next(unknown_ids), report.unknown_answers, report.unknown_seconds)]
        for identifier, answers, seconds in pair if i % 2 == 0 else reversed(pair):
            one(identifier, answers, seconds)
    return report
