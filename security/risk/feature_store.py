"""The features layer: computes :class:`~security.risk.features.Features` from stored history.

Every query is bounded by an index (see ``security.risk.models``): per-account history by
(account_id, kind, occurred_at), per-IP failures by (ip, outcome, received_at), payees by
(account_id, destination_address), familiarity by primary key in ``risk_familiarity_counts``. Nothing
scans the whole event table, so the cost per event does not grow with the number of stored events.

History is relative to the event's ``occurred_at`` (late events are scored against what happened
before them); brute-force and IP windows use ``received_at`` (what the attacker does now).
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Final, NamedTuple, Protocol, TypeAlias

from sqlalchemy import (
    BigInteger,
    BindParameter,
    Select,
    String,
    and_,
    bindparam,
    case,
    cast,
    exists,
    func,
    literal_column,
    or_,
    select,
    tuple_,
    type_coerce,
    union_all,
)
from sqlalchemy import column as sql_column
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, aliased

from security.accounts.models import Account
from security.audit.models import AuditEntry
from security.clock import utc
from security.credentials.services import AuditTag as CredentialTag
from security.db import DriverStatement, is_sqlite, table_of
from security.locks.bruteforce import FailureState, failures_in_window
from security.risk.familiarity import (
    IP_LEVELS,
    IP_WEIGHTS,
    UA_LEVELS,
    UA_WEIGHTS,
    FeatureEvidence,
    LevelStats,
    PopulationStats,
    familiarity,
    ip_levels,
    parse_user_agent,
)
from security.risk.features import EventKind, Features, FeatureValue
from security.risk.geo import GeoPoint, haversine_km, travel_speed_kmh
from security.risk.models import (
    SHARD_ROWS_PG,
    DenyListEntry,
    DenyListKind,
    FamiliarityCount,
    LoginOutcome,
    RiskEvent,
)
from security.risk.rules import BruteForceConfig
from security.risk.stats import p95, robust_z
from security.types import OwnJSON

#: The all-users counters are split over shards (stored scopes "*0".."*15", picked by account) so that
#: concurrent logins of different accounts rarely wait on the same hot counter row; reads sum the
#: shards back into the logical scope ``GLOBAL_SCOPE``. ("*" cannot start an account id.)
GLOBAL_SHARDS: Final = 16
SHARD_SCOPES: Final = tuple(f"*{k}" for k in range(GLOBAL_SHARDS))
GLOBAL_SCOPE: Final = ""
TOTAL_ROW: Final = ""  # the per-level total row's value
DEVICE_LEVEL: Final = "device"
USER_LEVEL: Final = "user"  # global scope: logins per account (p(u | legit)), total = all logins
#: Values longer than this are stored as a hash (user-agent strings can be long).
MAX_VALUE_LENGTH: Final = 200
#: Most recent transactions read for amount history and velocity.
TX_HISTORY_LIMIT: Final = 500
AMOUNT_HISTORY_LIMIT: Final = 200
#: Most distinct accounts per IP read for the credential-stuffing feature.
IP_ACCOUNTS_LIMIT: Final = 1000
HOUR: Final = timedelta(hours=1)
DAY: Final = timedelta(days=1)
SECONDS_PER_DAY: Final = 86400.0
SECONDS_PER_HOUR: Final = 3600.0
#: Changes that open the takeover-chain window for withdrawals.
SENSITIVE_CHANGES: Final = frozenset({"email", "phone", "password", "mfa_enabled", "mfa_disabled"})
#: Second-factor changes made through Foxguard itself, read from the audit log (the backend does not post
#: account-change events for them). The last one is security.appeals.services.AuditTag.AUTHENTICATOR_REPLACED.
MFA_CHANGE_AUDIT_TAGS: Final = (
    CredentialTag.MFA_ENABLED.value,
    CredentialTag.MFA_DISABLED.value,
    CredentialTag.RECOVERY_CODES_REGENERATED.value,
    "account:mfa:replaced_by_appeal",
)
#: A password set this soon after the profile was created is the initial one, not a change.
INITIAL_PASSWORD_GRACE: Final = timedelta(hours=1)
#: Transactions that did not go out do not count as the account's normal amounts.
NOT_EXECUTED: Final = ("block",)



def global_shard(account_id: str) -> str:
    """Return the stored scope of the all-users counters this account's logins update."""
    digest = hashlib.sha256(account_id.encode()).digest()
    return SHARD_SCOPES[int.from_bytes(digest[:4], "big") % GLOBAL_SHARDS]


@dataclass
class Tally:
    """A counter row's values (summed over shards for the global scope)."""

    count: int
    children: int


CountMap = dict[tuple[str, str, str], Tally]


def value_key(value: str) -> str:
    """Return the stored form of a familiarity value (long values are hashed to fit the key)."""
    if len(value) <= MAX_VALUE_LENGTH:
        return value
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class Context:
    """Where an event came from (all optional: the backend sends what it knows)."""

    ip: str | None = None
    device_id: str | None = None
    user_agent: str | None = None
    country: str | None = None
    lat: float | None = None
    lon: float | None = None
    asn: str | None = None

    def hierarchies(self) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
        """Return {feature: (level names, values finest first)} for the familiarity model."""
        out: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        if self.ip:
            out["ip"] = (IP_LEVELS, ip_levels(self.ip, self.asn, self.country))
        if self.user_agent:
            out["ua"] = (UA_LEVELS, parse_user_agent(self.user_agent).levels())
        return out


def _written_hierarchies(ctx: Context) -> list[tuple[Sequence[str], Sequence[str]]]:
    """The (levels, values finest first) a successful login from ``ctx`` counts."""
    hierarchies: list[tuple[Sequence[str], Sequence[str]]] = list(ctx.hierarchies().values())
    if ctx.device_id:
        hierarchies.append(((DEVICE_LEVEL,), (ctx.device_id,)))
    if ctx.country and not ctx.ip:  # the IP hierarchy already carries the country
        hierarchies.append(((IP_LEVELS[2],), (ctx.country.upper(),)))
    return hierarchies


def counter_keys(account_id: str, ctx: Context) -> set[tuple[str, str]]:
    """Every (level, value) pair a login from ``ctx`` reads or writes, with the levels' total rows."""
    keys = {(USER_LEVEL, account_id), (USER_LEVEL, TOTAL_ROW)}
    for levels, values in _written_hierarchies(ctx):
        for level, value in zip(levels, values, strict=True):
            keys.add((level, value_key(value)))
            keys.add((level, TOTAL_ROW))
    if ctx.country:  # "new country?" for the account, also when the IP hierarchy says otherwise
        keys.add((IP_LEVELS[2], ctx.country.upper()))
    return keys


class AccountFacts(Protocol):
    """What the features read of an account: the ORM ``Account``, or the columns a transaction event
    reads when it locks the account's row (``security.risk.services.LockedAccount``)."""

    @property
    def id(self) -> str: ...
    @property
    def home_country(self) -> str | None: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def password_changed_at(self) -> datetime | None: ...


@dataclass(frozen=True)
class TransactionInput:
    """The transaction-specific part of an event."""

    amount: Decimal
    currency: str
    destination_address: str
    destination_country: str | None
    balance_before: Decimal | None


#: What a probe can ask besides the place features; see :func:`probe_statement`.
PROBE_TRANSACTION: Final = "transaction"
PROBE_STORED_ANSWER: Final = "stored_answer"
PROBE_IP_FAILURES: Final = "ip_failures"


# The probe's tables under short names, and its constants written into the SQL: the statement stays
# short and its text constant, so the driver's parse cache and server-side prepared statement apply
# (psycopg caches statements up to 4,096 characters and 50 parameters).
_E = aliased(RiskEvent, name="e")
_D = aliased(DenyListEntry, name="d")
_A = aliased(AuditEntry, name="a")


def _sql(*values: str) -> Any:
    """Our own constants (enum values, audit tags, shard scopes) as SQL string literals."""
    assert all(re.fullmatch(r"[a-z_:*0-9]+", v) for v in values)  # noqa: S101 - never user input
    literals: list[Any] = [literal_column(f"'{v}'") for v in values]
    return literals[0] if len(values) == 1 else literals


# The shard scopes written into the SQL too: fewer parameters keep the counter read in the driver's
# parse cache (at most 50 parameters).
_SHARD_LITERALS: Final[tuple[Any, ...]] = tuple(_sql(*SHARD_SCOPES))


#: The account's transactions before ``occurred_at`` and since ``since``, newest first: the amount history
#: is taken from these.
TX_HISTORY: Final = (
    select(_E.amount, _E.currency, _E.occurred_at, _E.outcome)
    .where(_E.account_id == bindparam("account_id"), _E.kind == _sql(EventKind.TRANSACTION),
           _E.occurred_at < bindparam("occurred_at"), _E.occurred_at >= bindparam("since"))
    .order_by(_E.occurred_at.desc())
    .limit(TX_HISTORY_LIMIT)
)

#: The account's transactions in the day before ``occurred_at`` (after ``day_ago``), newest first (velocity):
#: the same rows :data:`TX_HISTORY` has from that day (``day_ago`` lies after ``since``).
TX_LAST_DAY: Final = (
    select(_E.amount, _E.currency, _E.occurred_at)
    .where(_E.account_id == bindparam("account_id"), _E.kind == _sql(EventKind.TRANSACTION),
           _E.occurred_at < bindparam("occurred_at"), _E.occurred_at > bindparam("day_ago"))
    .order_by(_E.occurred_at.desc())
    .limit(TX_HISTORY_LIMIT)
)


class PastTransaction(NamedTuple):
    """One of the account's transactions of the last day, as the velocity features read it (a named tuple:
    a frozen dataclass costs several times more to make)."""

    amount: str | None
    currency: str | None
    occurred_at: datetime


def _json_rows_column(query: Select[*tuple[Any, ...]], name: str, *, sqlite: bool) -> Any:
    """``query``'s rows as one JSON array of arrays, a probe column (the rows travel in the probe's round
    trip instead of a statement and a result row each). Timestamps come back as ISO 8601 text."""
    rows = query.subquery(name[0])
    return _aggregated_column(_json_array(*rows.c, sqlite=sqlite), name, sqlite=sqlite)


def _aggregated_column(item: Any, name: str, *, sqlite: bool) -> Any:
    """A probe column: ``item`` of every row of its FROM as one JSON array (``[]`` when there is none)."""
    if sqlite:
        items: Any = func.json_group_array(item)
    else:
        items = func.coalesce(func.json_agg(item), literal_column("'[]'::json"))
    return type_coerce(select(items).scalar_subquery(), OwnJSON).label(name)


def _amounts_column(*, sqlite: bool) -> Any:
    """The amount history: of :data:`TX_HISTORY`'s transactions, those in the event's currency (parameter
    ``currency``) with an amount that went out (outcome not in :data:`NOT_EXECUTED`), the newest
    :data:`AMOUNT_HISTORY_LIMIT`, as one JSON array of their amounts (text). Their order is not kept: the
    statistics computed on them (95th percentile, median, MAD) do not depend on it. Only the amounts
    travel, not a timestamp per row, which both databases would have to format and the app to parse.
    (Amounts are stored as ``format(Decimal, "f")`` of a validated amount, so every one of them parses; the
    app skips one that would not, after the limit.)"""
    history = TX_HISTORY.subquery("hx")
    executed = or_(history.c.outcome.is_(None), history.c.outcome.not_in([_sql(v) for v in NOT_EXECUTED]))
    picked = (
        select(history.c.amount)
        .where(history.c.currency == bindparam("currency"), history.c.amount.is_not(None), executed)
        .order_by(history.c.occurred_at.desc())
        .limit(AMOUNT_HISTORY_LIMIT)
        .subquery("am")
    )
    return _aggregated_column(picked.c.amount, "amounts", sqlite=sqlite)


def _last_day_column(*, sqlite: bool) -> Any:
    """:data:`TX_LAST_DAY` as ``[amount, currency, occurred_at]`` arrays (see :func:`_json_rows_column`)."""
    return _json_rows_column(TX_LAST_DAY, "last_day", sqlite=sqlite)


def past_transactions(rows: Sequence[Sequence[Any]]) -> list[PastTransaction]:
    """The probe's ``last_day`` column, newest first (timestamps come as ISO 8601 text from either backend)."""
    past = [PastTransaction(amount, currency, utc(datetime.fromisoformat(at))) for amount, currency, at in rows]
    past.sort(key=lambda p: p.occurred_at, reverse=True)
    return past


def _ip_failures(ip: str, since: str) -> Select[datetime, str]:
    """Failed logins from the IP in parameter ``ip`` received in (``since``, ``at``], newest first."""
    return (
        select(_E.received_at, _E.account_id)
        .where(_E.ip == bindparam(ip), _E.outcome == _sql(LoginOutcome.FAILURE),
               _E.received_at > bindparam(since), _E.received_at <= bindparam("at"))
        .order_by(_E.received_at.desc())
        .limit(IP_ACCOUNTS_LIMIT)
    )


#: Failed logins from ``ip`` received in (``since``, ``at``], newest first (brute force across accounts).
IP_FAILURES: Final = DriverStatement(_ip_failures("ip", "since"))


def ip_failures_from_json(rows: Sequence[Sequence[Any]]) -> list[tuple[datetime, str]]:
    """The probe's ``ip_failures`` column as (received_at, account_id), newest first."""
    found = [(utc(datetime.fromisoformat(at)), account_id) for at, account_id in rows]
    found.sort(key=lambda item: item[0], reverse=True)
    return found


def _json_array(*values: Any, sqlite: bool) -> Any:
    return func.json_array(*values) if sqlite else func.json_build_array(*values)


def _first(columns: Sequence[Any], *where: Any, newest: bool, name: str, sqlite: bool) -> Any:
    """The ``columns`` of the newest (or oldest) matching event as one JSON array (NULL when there is none),
    a labelled scalar subquery: one index probe for all of them. Timestamps come back as ISO 8601 text."""
    order = (_E.occurred_at.desc(), _E.id.desc()) if newest else (_E.occurred_at, _E.id)
    row = select(_json_array(*columns, sqlite=sqlite)).where(*where).order_by(*order).limit(1)
    return type_coerce(row.scalar_subquery(), OwnJSON).label(name)


def _timestamp(text: str) -> datetime:
    return utc(datetime.fromisoformat(text))


#: A probe's one row (:class:`~security.db.DriverStatement` row): attributes named after its columns.
Probe: TypeAlias = Any


def stored_answer(probe: Probe) -> tuple[str | None, str, dict[str, Any] | None] | None:
    """A probe's ``stored`` column (``PROBE_STORED_ANSWER``): the earlier event's request hash, kind and
    stored answer, or None when no event used the id."""
    if probe.stored is None:
        return None
    request_hash, kind, response = probe.stored
    return request_hash, kind, response


def _deny_listed_column(kind: DenyListKind, value: str, name: str) -> Any:
    return exists().where(
        _D.kind == _sql(kind), _D.value == bindparam(value),
        or_(_D.expires_at.is_(None), _D.expires_at > bindparam("at")),
    ).label(name)


@functools.cache
def _probe_driver(*parts: str, sqlite: bool, counts: CountShape | None = None) -> DriverStatement:
    """:func:`probe_statement` for the driver's cursor (built once per shape and backend)."""
    return DriverStatement(probe_statement(*parts, sqlite=sqlite, counts=counts))


def probe_statement(*parts: str, sqlite: bool = False, counts: CountShape | None = None) -> Select[Any]:
    """One round trip for the facts an event's features need.

    Always: the neighbouring successful logins with coordinates before and after the event (travel) and
    whether the IP is deny-listed. With ``PROBE_TRANSACTION``: whether the payee was paid before, whether
    the destination is deny-listed, the latest sensitive change (event and Foxguard's own MFA changes) and
    the amount history and the last day's transactions (:func:`_amounts_column`, :func:`_last_day_column`).
    Every subquery is an index probe; parameters: ``account_id``, ``occurred_at``, ``at``, ``ip`` and, for
    transactions, ``address``, ``payee``, ``currency``, ``since`` (the history's start) and ``day_ago``.
    With ``PROBE_STORED_ANSWER``: what an earlier event of this client with this ``event_id`` stored
    (``stored``, see :func:`stored_answer`: the idempotency lookup of event ingestion, in the same round
    trip); parameters ``client_id`` and ``event_id``. With ``PROBE_IP_FAILURES``: the failed logins from
    the event's IP address (``ip_failures``, see :func:`ip_failures_from_json`); parameters ``fail_ip``
    (the address as sent) and ``fail_since``. With ``counts`` (a login's): the familiarity counter read of
    those keys (``counts``, rows as :func:`_counts_query` returns them; see :func:`_count_map`); parameters
    ``shard`` and ``cv0``, ``cv1``... (:func:`_count_key_params`).
    Columns that take several values of one event (``before``, ``after``, ``change``, ``stored``) carry
    them as one JSON array: one index probe each instead of one per value.
    """
    account = _E.account_id == bindparam("account_id")
    when: BindParameter[datetime] = bindparam("occurred_at")
    located = (account, _E.kind == _sql(EventKind.LOGIN), _E.outcome == _sql(LoginOutcome.SUCCESS),
               _E.lat.is_not(None), _E.lon.is_not(None))
    columns = [_deny_listed_column(DenyListKind.IP, "ip", "ip_listed")]
    # A late event also has a neighbour after it: travel must be possible in both directions.
    for side, newest, bound in (("before", True, _E.occurred_at <= when), ("after", False, _E.occurred_at > when)):
        columns.append(_first((_E.lat, _E.lon, _E.occurred_at), *located, bound, newest=newest, name=side,
                              sqlite=sqlite))
    if PROBE_TRANSACTION in parts:
        changed = (account, _E.kind == _sql(EventKind.ACCOUNT_CHANGE),
                   _E.change.in_(_sql(*sorted(SENSITIVE_CHANGES))), _E.occurred_at <= when)
        columns += [
            exists().where(account, _E.destination_address == bindparam("payee"),
                           _E.kind == _sql(EventKind.TRANSACTION), _E.occurred_at < when).label("paid_before"),
            _deny_listed_column(DenyListKind.ADDRESS, "address", "address_listed"),
            _first((_E.occurred_at, _E.change), *changed, newest=True, name="change", sqlite=sqlite),
            select(func.max(_A.at)).where(
                _A.subject_type == _sql("account"), _A.subject_id == bindparam("account_id"),
                _A.action.in_(_sql(*MFA_CHANGE_AUDIT_TAGS)), _A.at <= when,
            ).scalar_subquery().label("mfa_at"),
            _amounts_column(sqlite=sqlite),
            _last_day_column(sqlite=sqlite),
        ]
    if PROBE_IP_FAILURES in parts:
        columns.append(_json_rows_column(_ip_failures("fail_ip", "fail_since"), "ip_failures", sqlite=sqlite))
    if PROBE_STORED_ANSWER in parts:
        earlier = select(_json_array(_E.request_hash, _E.kind, func.json(_E.response) if sqlite else _E.response,
                                     sqlite=sqlite)).where(_E.client_id == bindparam("client_id"),
                                                           _E.event_id == bindparam("event_id"))
        columns.append(type_coerce(earlier.scalar_subquery(), OwnJSON).label("stored"))
    if counts is not None:
        found = _counts_query(counts, sqlite=sqlite).subquery("fc")
        columns.append(_aggregated_column(_json_array(*found.c, sqlite=sqlite), "counts", sqlite=sqlite))
    return select(*columns)


def _listed_value(value: str | None) -> str | None:
    """How deny-list values are stored (trimmed, lower case)."""
    return value.strip().lower() if value else None


def travel(ctx: Context, occurred_at: datetime, probe: Probe) -> tuple[float | None, float | None, str | None]:
    """(speed km/h, distance km, explanation) to the faster of the neighbouring logins in ``probe``."""
    if ctx.lat is None or ctx.lon is None:
        return None, None, None
    here = GeoPoint(ctx.lat, ctx.lon, occurred_at)
    best: tuple[float, float, str] | None = None
    for side, neighbour in (("previous", probe.before), ("next", probe.after)):
        if neighbour is None:
            continue
        lat, lon, at = neighbour
        there = GeoPoint(lat, lon, _timestamp(at))
        speed = travel_speed_kmh(there, here)
        distance = haversine_km(there.lat, there.lon, here.lat, here.lon)
        minutes = abs((here.at - there.at).total_seconds()) / 60
        if best is None or speed > best[0]:
            best = (speed, distance, f"{distance:,.0f} km in {minutes:,.0f} min from the {side} login")
    if best is None:
        return None, None, None
    return round(best[0], 1), round(best[1], 1), best[2]


#: The columns of a counter delta, in key order (the upsert's parameters on PostgreSQL are one array each).
_DELTA_COLUMNS: Final = ("scope", "level", "value", "count", "children")


@functools.cache
def _counter_upsert(*, sqlite: bool) -> DriverStatement:
    """Add ``count`` and ``children`` to counter rows, creating them at those values (built once).

    SQLite: one row's values per execution (an executemany). PostgreSQL: every row in one execution, as
    one array per column (``scope``, ``level``, ``value``, ``count``, ``children``), written in key order
    so concurrent upserts lock shared rows in the same order.
    """
    table = table_of(FamiliarityCount)
    if sqlite:
        statement: Any = sqlite_insert(table)
    else:
        typed = [(name, table.c[name].type) for name in _DELTA_COLUMNS]
        deltas = func.unnest(*(bindparam(name, type_=ARRAY(kind)) for name, kind in typed)).table_valued(
            *(sql_column(name, kind) for name, kind in typed)).render_derived(name="d")
        statement = pg_insert(table).from_select(
            list(_DELTA_COLUMNS),
            select(*(deltas.c[name] for name in _DELTA_COLUMNS)).order_by(deltas.c.scope, deltas.c.level,
                                                                         deltas.c.value))
    return DriverStatement(statement.on_conflict_do_update(
        index_elements=[table.c.scope, table.c.level, table.c.value],
        set_={"count": table.c.count + statement.excluded.count,
              "children": table.c.children + statement.excluded.children},
    ))


#: Which counter keys a read asks for, in key order: (level, whether the value is the level's total row).
#: The levels and the total rows' value are written into the SQL; the other values are parameters
#: ``cv0``, ``cv1``... in key order.
CountShape: TypeAlias = tuple[tuple[str, bool], ...]


def _count_key_params(account_id: str, keys: Iterable[tuple[str, str]]) -> tuple[CountShape, dict[str, str]]:
    """The shape and parameters of the counter read of ``keys`` ((level, value) pairs)."""
    wanted = sorted(set(keys))
    params = {"account_id": account_id, "shard": global_shard(account_id)}
    values = [value for _, value in wanted if value != TOTAL_ROW]
    params.update((f"cv{i}", value) for i, value in enumerate(values))
    return tuple((level, value == TOTAL_ROW) for level, value in wanted), params


def _counts_query(shape: CountShape, *, sqlite: bool) -> Select[Any]:
    """The counter read of :meth:`FeatureStore._counts` for the keys of ``shape`` (parameters
    ``account_id``, ``shard`` and the values, see :data:`CountShape`)."""
    counter = FamiliarityCount
    account_id: BindParameter[str] = bindparam("account_id")
    wanted: list[tuple[Any, Any]] = []
    values = 0
    for level, total in shape:
        if total:
            wanted.append((_sql(level), literal_column(f"'{TOTAL_ROW}'")))  # our constant
        else:
            wanted.append((_sql(level), bindparam(f"cv{values}", type_=String())))
            values += 1
    if sqlite:
        # SQLite seeks only the first column for "(level, value) IN (...)" and scans the rest; joined to
        # the keys as a derived table it seeks every (scope, level, value) of the account and the shards.
        keyed = union_all(*(select(level.label("level"), value.label("value")) for level, value in wanted)
                          ).subquery("k")
        rows: Any = select(counter.scope, counter.level, counter.value, counter.count, counter.children
                           ).select_from(keyed).join(counter, and_(
                               counter.scope.in_([account_id, *_SHARD_LITERALS]),
                               counter.level == keyed.c.level, counter.value == keyed.c.value)).subquery("c")
    else:
        # The account's rows by primary key, the shards' rows through their partial index (one descent per
        # key for all 16 shards; the predicate is written as the index's, so even a generic plan uses it).
        # The key list appears twice under the same parameter names: the driver sends it once.
        asked = tuple_(counter.level, counter.value).in_([tuple_(*key) for key in wanted])
        rows = union_all(
            select(counter).where(counter.scope == account_id, asked),
            select(counter).where(literal_column(SHARD_ROWS_PG), asked),
        ).subquery("c")
    scope = case((rows.c.scope == account_id, rows.c.scope), else_=literal_column("''"))
    return select(
        scope, rows.c.level, rows.c.value,
        cast(func.sum(rows.c.count), BigInteger), cast(func.sum(rows.c.children), BigInteger),
        func.max(case((rows.c.scope == bindparam("shard"), literal_column("1")), else_=literal_column("0"))),
    ).group_by(scope, rows.c.level, rows.c.value)


@functools.cache
def _counts_statement(shape: CountShape, *, sqlite: bool) -> DriverStatement:
    """:func:`_counts_query` for the driver's cursor (built once per shape and backend)."""
    return DriverStatement(_counts_query(shape, sqlite=sqlite))


def _count_map(rows: Iterable[Sequence[Any]], shard: str) -> CountMap:
    """The counter read's rows (or the probe's ``counts`` column) as :meth:`FeatureStore._counts` returns
    them."""
    out: CountMap = {}
    for stored, level, value, count, children, in_shard in rows:
        out[(stored, level, value)] = Tally(count, children)
        if in_shard:
            out[(shard, level, value)] = Tally(0, 0)
    return out


class FeatureStore:
    """Reads history for the engine and keeps the familiarity counters current."""

    def __init__(self, session: Session, *, brute_force: BruteForceConfig) -> None:
        self._session = session
        self._bf = brute_force
        # Counter rows read for a login's features, kept for the same login's counter update.
        self._read: dict[tuple[str, Context], CountMap] = {}
        self._ip_failures: dict[tuple[str, datetime, timedelta], list[tuple[datetime, str]]] = {}

    # --- common -------------------------------------------------------------------------------

    def _probe(self, account_id: str, ctx: Context, occurred_at: datetime, at: datetime, *,
               tx: TransactionInput | None = None, stored: tuple[Any, str] | None = None,
               ip_failures: bool = False, counts: bool = False) -> Probe:
        parts = (((PROBE_TRANSACTION,) if tx else ()) + ((PROBE_STORED_ANSWER,) if stored else ())
                 + ((PROBE_IP_FAILURES,) if ip_failures else ()))
        params: dict[str, Any] = {"account_id": account_id, "occurred_at": occurred_at, "at": at,
                                  "ip": _listed_value(ctx.ip)}
        shape = None
        if counts:
            shape, key_params = _count_key_params(account_id, counter_keys(account_id, ctx))
            params.update(key_params)
        statement = _probe_driver(*parts, sqlite=is_sqlite(self._session), counts=shape)
        if tx:
            params.update(payee=tx.destination_address, address=_listed_value(tx.destination_address),
                          currency=tx.currency, since=occurred_at - DAY * 365, day_ago=occurred_at - DAY)
        if stored:
            params.update(client_id=stored[0], event_id=stored[1])
        if ip_failures:
            params.update(fail_ip=ctx.ip, fail_since=at - self._bf.ip_window)
        (row,) = statement.execute(self._session, params)
        if counts:
            # Kept for familiarity_features and the counter update of the same login.
            self._read[(account_id, ctx)] = _count_map(row.counts, params["shard"])
        return row

    def login_probe(self, *, account_id: str, ctx: Context, occurred_at: datetime, received_at: datetime,
                    stored: tuple[Any, str] | None = None) -> Probe:
        """The facts :meth:`login_features` needs from history in one round trip: the place features, the
        familiarity counters (kept for :meth:`familiarity_features`) and, unless kept from an earlier
        :meth:`ip_failures` call, the IP's failed logins. ``stored`` (client id, event id): also what an
        earlier event with that id stored (:func:`stored_answer`)."""
        kept = bool(ctx.ip) and (ctx.ip, received_at, self._bf.ip_window) in self._ip_failures
        return self._probe(account_id, ctx, occurred_at, received_at, stored=stored,
                           ip_failures=bool(ctx.ip) and not kept, counts=True)

    def transaction_probe(self, *, account_id: str, tx: TransactionInput, ctx: Context, occurred_at: datetime,
                          received_at: datetime, client_id: Any, event_id: str) -> Probe:
        """The facts :meth:`transaction_features` needs, and what an earlier event with this client's
        ``event_id`` stored (:func:`stored_answer`), in one round trip."""
        return self._probe(account_id, ctx, occurred_at, received_at, tx=tx, stored=(client_id, event_id))

    def _counts(self, account_id: str, keys: Iterable[tuple[str, str]]) -> CountMap:
        """Read the counters of ``keys`` ((level, value) pairs), summed in the database.

        The result holds three kinds of keys: ``(account_id, level, value)``, the account's own rows;
        ``(GLOBAL_SCOPE, level, value)``, the global shards summed; and ``(shard, level, value)`` for the
        rows that exist in the account's own shard (presence only, with zero tallies: the counter update
        needs to know which values are new there).

        Exact keys only: each is a primary-key probe, so the cost does not grow with the number of
        counter rows (reading every row of the shards for the levels and values did, and dominated a
        login's cost on a large history).
        """
        shape, params = _count_key_params(account_id, keys)
        if not shape:
            return {}
        rows = _counts_statement(shape, sqlite=is_sqlite(self._session)).execute(self._session, params)
        return _count_map(rows, params["shard"])

    def _seen(self, account_id: str, level: str, value: str | None, counts: CountMap | None = None) -> bool | None:
        """Whether the account used ``value`` at ``level`` before (None when the value is unknown)."""
        if not value:
            return None
        key = (account_id, level, value_key(value))
        if counts is not None:
            tally = counts.get(key)
            return tally is not None and tally.count > 0
        row = self._session.get(FamiliarityCount, key)
        return row is not None and row.count > 0

    def _population(self, counts: CountMap, scope: str,
                    levels: Sequence[str], values: Sequence[str]) -> PopulationStats:
        def get(level: str, value: str) -> tuple[int, int]:
            row = counts.get((scope, level, value))
            return (row.count, row.children) if row is not None else (0, 0)

        keys = [value_key(v) for v in values]
        exact, _ = get(levels[0], keys[0])
        total, distinct = get(levels[0], TOTAL_ROW)
        coarser = []
        for level, key in zip(levels[1:], keys[1:], strict=True):
            count, children = get(level, key)
            _, level_distinct = get(level, TOTAL_ROW)
            coarser.append(LevelStats(count=count, distinct=level_distinct, children=children,
                                      exact_within=min(exact, count)))
        return PopulationStats(total=total, exact=exact, distinct=distinct, levels=tuple(coarser))

    def familiarity_features(self, account_id: str, ctx: Context) -> tuple[
        dict[str, FeatureValue], str | None, CountMap
    ]:
        """Return ``familiarity_log10`` and ``successful_login_count``, an explanation, and the counter
        rows read (they also answer "new device?" and "new country?" without another query). The rows are
        those :meth:`login_probe` read for this login (every login's features start with its probe)."""
        hierarchies = ctx.hierarchies()
        counts = self._read[(account_id, ctx)]
        user_row = counts.get((GLOBAL_SCOPE, USER_LEVEL, account_id))
        total_row = counts.get((GLOBAL_SCOPE, USER_LEVEL, TOTAL_ROW))
        user_logins = user_row.count if user_row else 0
        values: dict[str, FeatureValue] = {"successful_login_count": user_logins}
        if total_row is None or total_row.count == 0 or not hierarchies:
            values["familiarity_log10"] = None
            return values, None, counts
        weights = {"ip": IP_WEIGHTS, "ua": UA_WEIGHTS}
        evidence = [
            FeatureEvidence(
                name, weights[name],
                self._population(counts, GLOBAL_SCOPE, levels, vals),
                self._population(counts, account_id, levels, vals),
            )
            for name, (levels, vals) in hierarchies.items()
        ]
        score = familiarity(evidence, users=max(total_row.children, 1), user_logins=user_logins,
                            all_logins=total_row.count)
        values["familiarity_log10"] = round(score.log10_score, 4)
        return values, score.explain(), counts

    def record_successful_login(self, account_id: str, ctx: Context) -> None:
        """Add a successful login to the familiarity counters (global and the account's own).

        One executemany upsert, into the account's own scope and its global shard; the rows it needs to
        know about were usually read already by :meth:`familiarity_features` for the same login (else
        one read).
        ``children`` (distinct values, for smoothing) grows when a value is new in its stored scope; a
        value first seen in two shards (or by two concurrent first sightings) is counted twice, which
        only nudges a smoothing constant (values like an IP address mostly live in one account's
        shard). Rows are written in key order so concurrent upserts lock them in the same order.
        """
        shard = global_shard(account_id)
        scoped = [(scope, levels, [value_key(v) for v in values])
                  for scope in (shard, account_id) for levels, values in _written_hierarchies(ctx)]
        scoped.append((shard, (USER_LEVEL,), [account_id]))
        existing = self._read.pop((account_id, ctx), None)
        if existing is None:
            existing = self._counts(account_id, counter_keys(account_id, ctx))
        deltas: dict[tuple[str, str, str], list[int]] = {}

        def add(key: tuple[str, str, str], children: int) -> None:
            delta = deltas.setdefault(key, [0, 0])
            delta[0] += 1
            delta[1] += children

        for scope, levels, values in scoped:
            new_finest = (scope, levels[0], values[0]) not in existing
            add((scope, levels[0], values[0]), 0)
            add((scope, levels[0], TOTAL_ROW), int(new_finest))
            for level, value in zip(levels[1:], values[1:], strict=True):
                add((scope, level, value), int(new_finest))
                add((scope, level, TOTAL_ROW), int((scope, level, value) not in existing))
        self._add_to_counters([(*key, delta[0], delta[1]) for key, delta in sorted(deltas.items())])

    def _add_to_counters(self, ordered: Sequence[tuple[str, str, str, int, int]]) -> None:
        """Add the (scope, level, value, count, children) deltas, in key order, to the counter rows."""
        if is_sqlite(self._session):
            _counter_upsert(sqlite=True).execute(self._session, [dict(zip(_DELTA_COLUMNS, row, strict=True))
                                                                 for row in ordered])
        else:
            _counter_upsert(sqlite=False).execute(self._session, {
                name: [row[i] for row in ordered] for i, name in enumerate(_DELTA_COLUMNS)})

    def ip_failures(self, ip: str, at: datetime, window: timedelta, *,
                    keep: bool = False) -> list[tuple[datetime, str]]:
        """Return (received_at, account_id) of failed logins from ``ip`` within ``window`` before ``at``.

        ``keep``: the next call with the same arguments gets this answer without a query (the login check
        asks before the password work and again for the features; nothing is stored in between).
        """
        key = (ip, at, window)
        kept = self._ip_failures.pop(key, None)
        if kept is not None:
            return kept
        rows = IP_FAILURES.execute(self._session, {"ip": ip, "since": at - window, "at": at})
        found = [(utc(r.received_at), r.account_id) for r in rows]
        if keep:
            self._ip_failures[key] = found
        return found

    # --- per kind -----------------------------------------------------------------------------

    def login_features(
        self,
        *,
        account: Account | None,
        account_id: str,
        ctx: Context,
        occurred_at: datetime,
        received_at: datetime,
        counter: FailureState,
        current_failed: bool,
        probe: Probe | None = None,
    ) -> Features:
        """Features for a login; ``current_failed`` counts this attempt in the IP figures. ``probe``: read
        already by :meth:`login_probe` (for the same login)."""
        values: dict[str, FeatureValue] = {}
        explanations: dict[str, str] = {}
        if probe is None:
            probe = self.login_probe(account_id=account_id, ctx=ctx, occurred_at=occurred_at,
                                     received_at=received_at)
        values["failed_logins_account_window"] = failures_in_window(self._bf, counter, received_at)
        if ctx.ip:
            kept = self._ip_failures.pop((ctx.ip, received_at, self._bf.ip_window), None)
            recent = kept if kept is not None else ip_failures_from_json(probe.ip_failures)
            accounts = {account_id for _, account_id in recent}
            if current_failed:
                accounts.add(account_id)
            values["failed_logins_ip_window"] = len(recent) + int(current_failed)
            values["distinct_accounts_ip_window"] = len(accounts)
        else:
            values["failed_logins_ip_window"] = None
            values["distinct_accounts_ip_window"] = None
        familiar, explanation, counts = self.familiarity_features(account_id, ctx)
        values.update(self._place_features(account_id, ctx, occurred_at, probe, explanations, counts))
        values.update(familiar)
        if explanation:
            explanations["familiarity_log10"] = explanation
        values["ip_deny_listed"] = bool(probe.ip_listed)
        values["home_country"] = account.home_country if account else None
        values["account_age_days"] = _age_days(account, occurred_at)
        return Features(values, explanations=explanations)

    def _place_features(self, account_id: str, ctx: Context, occurred_at: datetime, probe: Probe,
                        explanations: dict[str, str],
                        counts: CountMap | None = None,
                        ) -> dict[str, FeatureValue]:
        values: dict[str, FeatureValue] = {}
        seen_device = self._seen(account_id, DEVICE_LEVEL, ctx.device_id, counts)
        seen_country = self._seen(account_id, IP_LEVELS[2], ctx.country.upper() if ctx.country else None,
                                  counts)
        values["is_new_device"] = None if seen_device is None else not seen_device
        values["is_new_country"] = None if seen_country is None else not seen_country
        values["country"] = ctx.country.upper() if ctx.country else None
        speed, distance, why = travel(ctx, occurred_at, probe)
        values["travel_speed_kmh"] = speed
        values["travel_distance_km"] = distance
        if why:
            explanations["travel_speed_kmh"] = why
        return values

    def transaction_features(self, *, account: AccountFacts, tx: TransactionInput, ctx: Context,
                             occurred_at: datetime, received_at: datetime,
                             probe: Probe | None = None) -> Features:
        """Features for an outgoing transaction (``probe``: read already by :meth:`transaction_probe`)."""
        values: dict[str, FeatureValue] = {}
        explanations: dict[str, str] = {}
        if probe is None:
            probe = self._probe(account.id, ctx, occurred_at, received_at, tx=tx)
        history = [a for a in map(_decimal, probe.amounts) if a is not None]
        rows = past_transactions(probe.last_day)
        values["amount"] = tx.amount
        values["amount_history_count"] = len(history)
        if history:
            top = p95(history)
            values["amount_p95"] = top
            values["amount_ratio_p95"] = (tx.amount / top).quantize(Decimal("0.0001")) if top > 0 else None
            z = robust_z(tx.amount, history)
            values["amount_robust_z"] = z.quantize(Decimal("0.0001")) if z is not None else None
            shown = format(top.normalize(), "f")
            explanations["amount_ratio_p95"] = f"95th percentile of {len(history)} earlier amounts: {shown}"
        else:
            values["amount_p95"] = values["amount_ratio_p95"] = values["amount_robust_z"] = None
        for label, span in (("1h", HOUR), ("24h", DAY)):
            recent = [r for r in rows if r.occurred_at > occurred_at - span]
            amounts = [_decimal(r.amount) for r in recent if r.currency == tx.currency]
            values[f"tx_count_{label}"] = len(recent) + 1  # this transaction included
            values[f"tx_sum_{label}"] = sum((a for a in amounts if a is not None), tx.amount)
        values["balance_fraction"] = (
            (tx.amount / tx.balance_before).quantize(Decimal("0.0001"))
            if tx.balance_before is not None and tx.balance_before > 0 else None
        )
        values["is_new_payee"] = not probe.paid_before
        values["destination_country"] = tx.destination_country
        values["home_country"] = account.home_country
        values["destination_deny_listed"] = bool(probe.address_listed)
        values["ip_deny_listed"] = bool(probe.ip_listed)
        values["account_age_days"] = _age_days(account, occurred_at)
        hours, what = _since_sensitive_change(account, occurred_at, probe)
        values["hours_since_sensitive_change"] = hours
        if what:
            explanations["hours_since_sensitive_change"] = what
        speed, distance, why = travel(ctx, occurred_at, probe)
        values["travel_speed_kmh"] = speed
        values["travel_distance_km"] = distance
        if why:
            explanations["travel_speed_kmh"] = why
        return Features(values, explanations=explanations)

    def change_features(self, *, account: Account, change: str, ctx: Context, occurred_at: datetime,
                        received_at: datetime) -> Features:
        """Features for an account change (e-mail, phone, password, MFA, device)."""
        explanations: dict[str, str] = {}
        values: dict[str, FeatureValue] = {"change": change}
        earlier = self._session.scalar(
            select(func.count()).select_from(RiskEvent).where(and_(
                RiskEvent.account_id == account.id, RiskEvent.kind == EventKind.ACCOUNT_CHANGE,
                RiskEvent.change.in_(sorted(SENSITIVE_CHANGES)),
                RiskEvent.occurred_at > occurred_at - DAY, RiskEvent.occurred_at <= occurred_at,
            ))
        ) or 0
        # This change included, like the transaction velocity counts.
        values["changes_24h"] = earlier + int(change in SENSITIVE_CHANGES)
        probe = self._probe(account.id, ctx, occurred_at, received_at)
        values.update(self._place_features(account.id, ctx, occurred_at, probe, explanations))
        values["ip_deny_listed"] = bool(probe.ip_listed)
        values["home_country"] = account.home_country
        values["account_age_days"] = _age_days(account, occurred_at)
        return Features(values, explanations=explanations)


def _since_sensitive_change(account: AccountFacts, occurred_at: datetime,
                            probe: Probe) -> tuple[float | None, str | None]:
    """Hours since the latest sensitive change (backend event, Foxguard MFA change or password set)."""
    candidates: list[tuple[datetime, str]] = []
    if probe.change is not None:
        at, what = probe.change
        candidates.append((_timestamp(at), f"{what} changed"))
    if probe.mfa_at is not None:
        candidates.append((utc(probe.mfa_at), "two-factor authentication changed"))
    changed = account.password_changed_at
    if (changed is not None and utc(changed) <= occurred_at
            and utc(changed) - utc(account.created_at) > INITIAL_PASSWORD_GRACE):
        candidates.append((utc(changed), "password changed"))
    if not candidates:
        return None, None
    when, what = max(candidates)
    hours = (occurred_at - when).total_seconds() / SECONDS_PER_HOUR
    return round(hours, 3), f"{what} {hours:.1f} h before"


def _age_days(account: AccountFacts | None, at: datetime) -> float | None:
    if account is None:
        return None
    return round((at - utc(account.created_at)).total_seconds() / SECONDS_PER_DAY, 4)


def _decimal(text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        return None
