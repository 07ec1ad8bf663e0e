"""Deterministic synthetic population shared by the seeder and the load generator.

Everything an account "is" (id, home country, IP addresses, devices, user agent, usual payees, typical
amount) is a pure function of its index and the run's seed, so the seeder can write a history and the
load generator (another process) can later send events that look like the same people without any
shared state. Nothing here touches the database or the network.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Final

#: (country, latitude, longitude): home places; coordinates are city centres, jittered per account.
PLACES: Final = (
    ("DE", 52.52, 13.40), ("FR", 48.86, 2.35), ("NL", 52.37, 4.90), ("ES", 40.42, -3.70),
    ("IT", 41.90, 12.50), ("PL", 52.23, 21.01), ("GB", 51.51, -0.13), ("US", 40.71, -74.01),
    ("BR", -23.55, -46.63), ("SG", 1.35, 103.82), ("JP", 35.68, 139.69), ("NG", 6.52, 3.38),
)
USER_AGENTS: Final = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 "
    "Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile "
    "Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "FoxWallet/4.2 (Android 13; SM-G991B) okhttp/4.12",
)
CURRENCIES: Final = ("EUR", "USD", "BTC")
#: The one password every seeded account has (its argon2 hash is computed once and shared: verifying it
#: costs exactly what verifying a per-account hash costs, and seeding 10k distinct hashes would take
#: minutes of argon2 at production parameters).
BENCH_PASSWORD: Final = "correct horse battery staple 42"  # noqa: S105 - synthetic benchmark data
WRONG_PASSWORD: Final = "not the password at all 17"  # noqa: S105 - synthetic benchmark data
#: How far back the pre-loaded history reaches.
HISTORY_SPAN: Final = timedelta(days=180)
#: Accounts are created this long before the oldest history event.
ACCOUNT_AGE_MARGIN: Final = timedelta(days=30)
PAYEES_PER_ACCOUNT: Final = 4
IPS_PER_ACCOUNT: Final = 2
DEVICES_PER_ACCOUNT: Final = 2
MAX_ACCOUNTS: Final = 256 * 256 * 64  # the IP scheme below stays unique up to here


@dataclass(frozen=True)
class Person:
    """What the synthetic account with index ``index`` looks like."""

    index: int
    account_id: str
    country: str
    lat: float
    lon: float
    ips: tuple[str, ...]
    devices: tuple[str, ...]
    user_agent: str
    payees: tuple[str, ...]
    currency: str
    typical_amount: Decimal

    @property
    def email(self) -> str:
        return f"{self.account_id}@bench.example"

    @property
    def phone(self) -> str:
        return f"+4915{self.index:09d}"


def account_id(index: int) -> str:
    """The wallet account id of synthetic account ``index``."""
    return f"bench-{index:07d}"


def person(seed: int, index: int) -> Person:
    """Build synthetic account ``index`` (the same for the same seed, in every process)."""
    if not 0 <= index < MAX_ACCOUNTS:
        raise ValueError(f"account index out of range: {index}")
    rng = random.Random(f"{seed}:{index}")
    country, lat, lon = PLACES[rng.randrange(len(PLACES))]
    # 10.a.b.c with a distinct /24 per account (the /24 is the familiarity model's "network" level).
    a, b = (index >> 8) & 0xFF, index & 0xFF
    block = index >> 16
    ips = tuple(f"10.{a}.{b}.{block * 4 + k + 1}" for k in range(IPS_PER_ACCOUNT))
    return Person(
        index=index,
        account_id=account_id(index),
        country=country,
        lat=round(lat + rng.uniform(-0.2, 0.2), 4),
        lon=round(lon + rng.uniform(-0.2, 0.2), 4),
        ips=ips,
        devices=tuple(f"dev-{index:07d}-{k}" for k in range(DEVICES_PER_ACCOUNT)),
        user_agent=USER_AGENTS[rng.randrange(len(USER_AGENTS))],
        payees=tuple(f"bc1q{index:07d}p{k:02d}{rng.getrandbits(40):010x}" for k in range(PAYEES_PER_ACCOUNT)),
        currency=CURRENCIES[rng.randrange(len(CURRENCIES))],
        typical_amount=Decimal(rng.choice((20, 50, 120, 300, 800, 2000))),
    )


def amount_like(rng: random.Random, who: Person, *, outlier_share: float = 0.01) -> Decimal:
    """An amount around the account's usual one (log-normal), rarely a large outlier."""
    factor = rng.lognormvariate(0, 0.5)
    if rng.random() < outlier_share:
        factor *= 20
    return (who.typical_amount * Decimal(str(round(factor, 4)))).quantize(Decimal("0.01")) or Decimal("0.01")


def created_at(anchor: datetime) -> datetime:
    """When every synthetic account was created (before its whole history)."""
    return anchor - HISTORY_SPAN - ACCOUNT_AGE_MARGIN


def utc_now() -> datetime:
    """The benchmark tools' only wall-clock read (the service reads its own clock)."""
    return datetime.now(UTC)
