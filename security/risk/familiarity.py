"""Login familiarity score after Freeman et al. (NDSS 2016), see ``/work/shared/RBA.md``.

    S_u(FV) = prod_k [ p(FV^k) / p(FV^k | u, legit) ] * p(u | attack) / p(u | legit)

High S means the login is unfamiliar for this user. Each feature (IP, user agent) is a hierarchy of
levels, finest first (IP address -> ASN or IP prefix -> country; full user-agent string -> browser ->
OS -> device type), and its probability is smoothed over the hierarchy:

    p(x) = sum_j w_j * p(x | x_j) * p(x_j)

with, for a value seen ``c`` times among ``N`` history entries, ``p = c / (N + U)`` (``1 / (N + U)``
when unseen), ``U`` = 1 + the number of distinct values below the conditioning node. At the finest
level ``p(x | x_0) = 1``. For the user's own likelihood, any level whose value the user never used
contributes a quarter of the global term ("never used -> one quarter of the global likelihood"), so a
wholly new value gives a ratio of 4 while familiar networks keep a new IP address quiet.

Pure: the database layer supplies counts (:class:`PopulationStats`) and this module does the math.
Also here: a small user-agent parser and the IP prefix used when the ASN is not known.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

#: Level weights (finest first), from Freeman et al.
IP_WEIGHTS: Final = (0.6, 0.3, 0.1)  # address, ASN or prefix, country
UA_WEIGHTS: Final = (0.5387, 0.2680, 0.1882, 0.0051)  # full string, browser, OS, device type
IP_LEVELS: Final = ("ip", "ip_network", "ip_country")
UA_LEVELS: Final = ("ua", "ua_browser", "ua_os", "ua_device")
#: Share of the global likelihood used for a user who never used a value (RBA.md).
UNSEEN_USER_SHARE: Final = 0.25
#: Prefix lengths standing in for the ASN when the client does not send one.
IPV4_PREFIX: Final = 24
IPV6_PREFIX: Final = 48
UNKNOWN: Final = "unknown"


@dataclass(frozen=True)
class LevelStats:
    """Counts for one coarser level ``j`` of a feature (not the finest level).

    ``count``: history entries whose value at this level equals the login's (``c(x_j)``);
    ``distinct``: distinct values at this level in the population (for ``p(x_j)``);
    ``children``: distinct finest values seen under this login's ``x_j`` (for ``p(x | x_j)``);
    ``exact_within``: entries with the login's exact finest value under ``x_j`` (usually ``c(x)``).
    """

    count: int
    distinct: int
    children: int
    exact_within: int


@dataclass(frozen=True)
class PopulationStats:
    """Counts of one feature over one population (all users, or one user's successful logins)."""

    total: int  # N
    exact: int  # c(x): entries with exactly the login's finest value
    distinct: int  # distinct finest values
    levels: tuple[LevelStats, ...]  # coarser levels in hierarchy order


def smoothed(count: int, total: int, distinct_below: int) -> float:
    """Return ``c / (N + U)`` (``1 / (N + U)`` when unseen) with ``U = 1 + distinct_below``."""
    return max(count, 1) / (total + 1 + distinct_below)


def level_terms(stats: PopulationStats) -> list[float]:
    """Return ``p(x | x_j) * p(x_j)`` for every level, finest first (unweighted)."""
    terms = [smoothed(stats.exact, stats.total, stats.distinct)]
    for level in stats.levels:
        p_level = smoothed(level.count, stats.total, level.distinct)
        p_within = smoothed(level.exact_within, level.count, level.children)
        terms.append(p_within * p_level)
    return terms


def global_probability(stats: PopulationStats, weights: Sequence[float]) -> float:
    """Return the hierarchically smoothed ``p(FV^k)`` over all users' logins."""
    _check_weights(stats, weights)
    return sum(w * t for w, t in zip(weights, level_terms(stats), strict=True))


def user_probability(
    user: PopulationStats, population: PopulationStats, weights: Sequence[float]
) -> float:
    """Return ``p(FV^k | u, legit)``: levels the user never used take a quarter of the global term."""
    _check_weights(user, weights)
    user_terms = level_terms(user)
    global_terms = level_terms(population)
    seen = [user.exact > 0, *(level.count > 0 for level in user.levels)]
    return sum(
        w * (u if used else UNSEEN_USER_SHARE * g)
        for w, u, g, used in zip(weights, user_terms, global_terms, seen, strict=True)
    )


def _check_weights(stats: PopulationStats, weights: Sequence[float]) -> None:
    if len(weights) != len(stats.levels) + 1:
        raise ValueError(f"{len(weights)} weights for {len(stats.levels) + 1} levels")


@dataclass(frozen=True)
class FeatureEvidence:
    """Counts for one feature (e.g. ``ip``) for the login being scored."""

    name: str
    weights: tuple[float, ...]
    population: PopulationStats
    user: PopulationStats


@dataclass(frozen=True)
class FamiliarityScore:
    """``log10 S`` and its parts, so reasons can show why a login looked unfamiliar."""

    log10_score: float
    ratios: Mapping[str, float]  # feature -> p(feature) / p(feature | user)
    user_prior_ratio: float  # p(u | attack) / p(u | legit)

    def explain(self) -> str:
        """Return a one-line human-readable breakdown."""
        parts = ", ".join(f"{name} x{ratio:.3g}" for name, ratio in self.ratios.items())
        return (f"familiarity log10(S)={self.log10_score:.2f} ({parts}, "
                f"user prior x{self.user_prior_ratio:.3g})")


def familiarity(
    evidence: Sequence[FeatureEvidence], *, users: int, user_logins: int, all_logins: int
) -> FamiliarityScore:
    """Compute the Freeman et al. score for one login.

    ``users``: number of users with any login; ``user_logins``/``all_logins``: successful logins of
    this user / of everyone, for ``p(u | legit)``. Raises ``ValueError`` on empty populations.
    """
    if users < 1 or all_logins < 1:
        raise ValueError("familiarity needs at least one user and one login in the history")
    log_score = 0.0
    ratios: dict[str, float] = {}
    for item in evidence:
        p_global = global_probability(item.population, item.weights)
        p_user = user_probability(item.user, item.population, item.weights)
        ratios[item.name] = p_global / p_user
        log_score += math.log10(ratios[item.name])
    p_attack = 1 / users
    # A user with no logins yet gets the smoothed share 1 / (N + users), keeping the ratio finite.
    p_legit = max(user_logins, 1) / (all_logins + users)
    prior = p_attack / p_legit
    return FamiliarityScore(log_score + math.log10(prior), ratios, prior)


# --- Value hierarchies -------------------------------------------------------------------------


def ip_network(ip: str, asn: str | int | None) -> str:
    """Return the middle IP level: the ASN if given, else the /24 (IPv4) or /48 (IPv6) prefix."""
    if asn is not None and str(asn).strip():
        return f"AS{str(asn).strip().upper().removeprefix('AS')}"
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return UNKNOWN
    prefix = IPV4_PREFIX if address.version == 4 else IPV6_PREFIX  # noqa: PLR2004 - IP version
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def ip_levels(ip: str, asn: str | int | None, country: str | None) -> tuple[str, str, str]:
    """Return the IP hierarchy values (address, ASN-or-prefix, country), finest first."""
    return ip, ip_network(ip, asn), (country or UNKNOWN).upper()


@dataclass(frozen=True)
class UserAgent:
    """The parts of a user-agent string the familiarity model uses."""

    full: str
    browser: str  # name + major version, e.g. "Chrome 120"
    os: str  # name + version, e.g. "Windows 10", "Android 14", "iOS 17.1"
    device: str  # desktop | mobile | tablet | bot | unknown

    def levels(self) -> tuple[str, str, str, str]:
        """Return the values finest first, as the model's hierarchy expects."""
        return self.full, self.browser, self.os, self.device


# Order matters: Edge and Opera also claim Chrome, Chrome also claims Safari.
_BROWSERS: Final = (
    ("Edge", re.compile(r"Edg(?:e|A|iOS)?/(\d+)")),
    ("Opera", re.compile(r"(?:OPR|Opera)/(\d+)")),
    ("Samsung Internet", re.compile(r"SamsungBrowser/(\d+)")),
    ("Firefox", re.compile(r"(?:Firefox|FxiOS)/(\d+)")),
    ("Chrome", re.compile(r"(?:Chrome|CriOS)/(\d+)")),
    ("Safari", re.compile(r"Version/(\d+)(?:\.\d+)*.*Safari/")),
    ("curl", re.compile(r"curl/(\d+)")),
    ("python-requests", re.compile(r"python-requests/(\d+)")),
)
_OSES: Final = (
    ("Windows", re.compile(r"Windows NT (\d+\.\d+)")),
    ("iOS", re.compile(r"(?:iPhone|iPad|iPod).*? OS (\d+(?:_\d+)?)")),
    ("macOS", re.compile(r"Mac OS X (\d+(?:[._]\d+)?)")),
    ("Android", re.compile(r"Android (\d+(?:\.\d+)?)")),
    ("ChromeOS", re.compile(r"CrOS \S+ (\d+)")),
    ("Linux", re.compile(r"Linux()")),
)
_WINDOWS_NAMES: Final = {"10.0": "10", "6.3": "8.1", "6.2": "8", "6.1": "7"}
_BOT: Final = re.compile(r"bot|crawler|spider|curl|python-requests|wget", re.IGNORECASE)


def parse_user_agent(ua: str | None) -> UserAgent:
    """Parse a user-agent string into browser, OS and device type (best effort, never raises)."""
    full = (ua or "").strip()
    browser = UNKNOWN
    for name, pattern in _BROWSERS:
        if match := pattern.search(full):
            browser = f"{name} {match.group(1)}"
            break
    os_name = UNKNOWN
    for name, pattern in _OSES:
        if match := pattern.search(full):
            version = match.group(1).replace("_", ".")
            if name == "Windows":
                version = _WINDOWS_NAMES.get(version, version)
            os_name = f"{name} {version}".strip()
            break
    if not full:
        device = UNKNOWN
    elif _BOT.search(full):
        device = "bot"
    elif "iPad" in full or "Tablet" in full or ("Android" in full and "Mobile" not in full):
        device = "tablet"
    elif "Mobile" in full or "iPhone" in full:
        device = "mobile"
    else:
        device = "desktop"
    return UserAgent(full or UNKNOWN, browser, os_name, device)
