"""Freeman et al. familiarity model: smoothing, hierarchy, attack vs familiar logins, UA parsing."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import pytest

from security.risk.familiarity import (
    IP_WEIGHTS,
    UA_WEIGHTS,
    FeatureEvidence,
    LevelStats,
    PopulationStats,
    familiarity,
    global_probability,
    ip_levels,
    ip_network,
    parse_user_agent,
    smoothed,
    user_probability,
)

Login = tuple[str, ...]  # hierarchy values, finest first


def stats(history: Sequence[Login], login: Login) -> PopulationStats:
    """Count a history the way the database layer does, for one login's values."""
    exact = sum(1 for h in history if h[0] == login[0])
    levels = []
    for j in range(1, len(login)):
        under = [h for h in history if h[j] == login[j]]
        levels.append(LevelStats(
            count=len(under),
            distinct=len({h[j] for h in history}),
            children=len({h[0] for h in under}),
            exact_within=sum(1 for h in under if h[0] == login[0]),
        ))
    return PopulationStats(len(history), exact, len({h[0] for h in history}), tuple(levels))


def test_smoothing_formula() -> None:
    # Seen c=3 times among N=10 with 4 distinct values below: 3 / (10 + 5).
    assert smoothed(3, 10, 4) == pytest.approx(3 / 15)
    # Unseen: 1 / (N + U).
    assert smoothed(0, 10, 4) == pytest.approx(1 / 15)


def test_global_probability_follows_the_hierarchy() -> None:
    history = [("1.1.1.1", "AS1", "DE")] * 6 + [("1.1.1.2", "AS1", "DE")] * 2 + [("9.9.9.9", "AS9", "US")] * 2
    login = ("1.1.1.1", "AS1", "DE")
    s = stats(history, login)
    # level 0: 6 / (10 + 1 + 3 distinct IPs); level 1: p(ip|AS1) * p(AS1) = 6/(8+1+2) * 8/(10+1+2); ...
    expected = (0.6 * 6 / 14 + 0.3 * (6 / 11) * (8 / 13) + 0.1 * (6 / 11) * (8 / 13))
    assert global_probability(s, IP_WEIGHTS) == pytest.approx(expected)


def test_new_ip_in_users_known_network_is_more_likely_for_the_user() -> None:
    population = [("1.1.1.1", "AS1", "DE")] * 50 + [("8.8.8.8", "AS8", "US")] * 50
    user_history = [("1.1.1.1", "AS1", "DE")] * 10
    known, unknown = ("1.1.1.99", "AS1", "DE"), ("5.5.5.5", "AS5", "RU")

    def ratio(login: Login) -> float:
        pop = stats(population, login)
        user = stats(user_history, login)
        return global_probability(pop, IP_WEIGHTS) / user_probability(user, pop, IP_WEIGHTS)

    # Hierarchical smoothing: the user's familiar network makes a new address there look familiar.
    assert ratio(unknown) == pytest.approx(4)
    assert ratio(known) < 1
    assert ratio(known) < ratio(unknown) / 10


def test_wholly_new_value_gives_user_a_quarter_of_global() -> None:
    population = [("1.1.1.1", "AS1", "DE")] * 50 + [("8.8.8.8", "AS8", "US")] * 50
    user_history = [("1.1.1.1", "AS1", "DE")] * 10
    login = ("5.5.5.5", "AS5", "RU")
    pop, user = stats(population, login), stats(user_history, login)
    assert user_probability(user, pop, IP_WEIGHTS) == pytest.approx(global_probability(pop, IP_WEIGHTS) / 4)


def test_weights_must_match_levels() -> None:
    s = stats([("a", "b", "c")], ("a", "b", "c"))
    with pytest.raises(ValueError, match="3 weights for 4 levels"):
        global_probability(PopulationStats(1, 1, 1, (*s.levels, s.levels[0])), IP_WEIGHTS)


def world() -> tuple[list[tuple[str, Login, Login]], Counter[str]]:
    """A small population: 40 users logging in from their own IP (ISP AS-per-country) and browser."""
    logins: list[tuple[str, Login, Login]] = []
    uas = [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0 Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.1 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    ]
    for u in range(40):
        country = ["DE", "FR", "US"][u % 3]
        ip = f"10.{u % 3}.{u}.1"
        ua = parse_user_agent(uas[u % 3]).levels()
        for _ in range(12):
            logins.append((f"user{u}", ip_levels(ip, f"AS{100 + u % 3}", country), ua))
    return logins, Counter(user for user, _, _ in logins)


def score(logins: list[tuple[str, Login, Login]], per_user: Counter[str], user: str, ip: Login,
          ua: Login) -> float:
    mine = [entry for entry in logins if entry[0] == user]
    evidence = [
        FeatureEvidence("ip", IP_WEIGHTS, stats([e[1] for e in logins], ip), stats([e[1] for e in mine], ip)),
        FeatureEvidence("ua", UA_WEIGHTS, stats([e[2] for e in logins], ua), stats([e[2] for e in mine], ua)),
    ]
    return familiarity(evidence, users=len(per_user), user_logins=per_user[user],
                       all_logins=len(logins)).log10_score


def test_familiar_login_is_quiet_and_attack_login_is_flagged() -> None:
    logins, per_user = world()
    own_ip, own_ua = logins[12 * 4][1], logins[12 * 4][2]  # user4's usual values
    assert logins[12 * 4][0] == "user4"
    familiar = score(logins, per_user, "user4", own_ip, own_ua)
    attacker_ua = parse_user_agent("python-requests/2.31.0").levels()
    attack = score(logins, per_user, "user4", ip_levels("203.0.113.7", "AS666", "RU"), attacker_ua)
    new_ip_same_isp = score(logins, per_user, "user4", ip_levels("10.1.99.1", "AS101", "FR"), own_ua)
    assert familiar < 0 < attack
    assert attack == pytest.approx(math.log10(16), abs=0.05)  # 4 x 4, average user prior ~ 1
    # A new address at the user's usual ISP stays far below the attack and below the default threshold.
    assert familiar < new_ip_same_isp < 0


def test_familiarity_explains_itself() -> None:
    logins, per_user = world()
    mine = [e for e in logins if e[0] == "user0"]
    ip = ip_levels("203.0.113.7", None, "RU")
    result = familiarity(
        [FeatureEvidence("ip", IP_WEIGHTS, stats([e[1] for e in logins], ip),
                         stats([e[1] for e in mine], ip))],
        users=len(per_user), user_logins=12, all_logins=len(logins),
    )
    assert result.ratios["ip"] == pytest.approx(4)
    # Prior: p(u | attack) / p(u | legit) = (1/40) / (12 / (480 + 40)).
    assert result.user_prior_ratio == pytest.approx((1 / 40) / (12 / 520))
    assert result.log10_score == pytest.approx(math.log10(4 * result.user_prior_ratio))
    assert result.explain() == "familiarity log10(S)=0.64 (ip x4, user prior x1.08)"


def test_familiarity_needs_history() -> None:
    with pytest.raises(ValueError, match="at least one user"):
        familiarity([], users=0, user_logins=0, all_logins=0)


def test_ip_network_uses_asn_or_prefix() -> None:
    assert ip_network("192.0.2.77", "as3320") == "AS3320"
    assert ip_network("192.0.2.77", 3320) == "AS3320"
    assert ip_network("192.0.2.77", None) == "192.0.2.0/24"
    assert ip_network("2001:db8:1:2::5", "") == "2001:db8:1::/48"
    assert ip_network("not-an-ip", None) == "unknown"
    assert ip_levels("192.0.2.77", None, None) == ("192.0.2.77", "192.0.2.0/24", "UNKNOWN")


@pytest.mark.parametrize(
    ("ua", "browser", "os", "device"),
    [
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
         "Chrome/120.0.0.0 Safari/537.36", "Chrome 120", "Windows 10", "desktop"),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
         "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91", "Edge 120", "Windows 10", "desktop"),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
         "Version/17.1 Mobile/15E148 Safari/604.1", "Safari 17", "iOS 17.1", "mobile"),
        ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
         "Chrome/120.0.6099.144 Mobile Safari/537.36", "Chrome 120", "Android 14", "mobile"),
        ("Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) "
         "Chrome/119.0 Safari/537.36", "Chrome 119", "Android 13", "tablet"),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7; rv:121.0) Gecko/20100101 Firefox/121.0",
         "Firefox 121", "macOS 10.15", "desktop"),
        ("python-requests/2.31.0", "python-requests 2", "unknown", "bot"),
        ("", "unknown", "unknown", "unknown"),
    ],
)
def test_parse_user_agent(ua: str, browser: str, os: str, device: str) -> None:
    parsed = parse_user_agent(ua)
    assert (parsed.browser, parsed.os, parsed.device) == (browser, os, device)
    assert parsed.full == (ua or "unknown")
