"""Pure identity checks: contact codes, recent transactions, identity documents, flow tokens."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from security.appeals.verification import (
    CodeCheck,
    TransactionRecord,
    amount_within,
    check_contact_code,
    contact_code_hash,
    document_hmac,
    document_matches,
    issue_contact_code,
    matches_recent_transaction,
    new_flow_token,
    recent_transactions,
    token_matches,
)
from security.crypto import keyed_hash, normalize_document_number
from security.entropy import SeededEntropy, SystemEntropy

KEY = "test-key"
AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
EXPIRES = AT + timedelta(minutes=15)


def _check(code: str, issued_hash: str, **overrides: Any) -> CodeCheck:
    args: dict[str, Any] = {
        "stored_hash": issued_hash, "key": KEY, "purpose": "appeal", "owner_id": "a1", "digits": 6,
        "expires_at": EXPIRES, "used": False, "attempts": 0, "max_attempts": 5, "at": AT,
    }
    args.update(overrides)
    return check_contact_code(code, **args)


def test_contact_code_is_digits_and_stored_keyed() -> None:
    issued = issue_contact_code(SystemEntropy(), key=KEY, purpose="appeal", owner_id="a1", digits=8)
    assert len(issued.code) == 8
    assert issued.code.isdigit()
    assert issued.code not in issued.code_hash
    # Keyed and bound: another key, purpose or owner gives another hash.
    assert issued.code_hash == contact_code_hash(KEY, "appeal", "a1", issued.code)
    assert issued.code_hash != contact_code_hash("other", "appeal", "a1", issued.code)
    assert issued.code_hash != contact_code_hash(KEY, "freeze", "a1", issued.code)
    assert issued.code_hash != contact_code_hash(KEY, "appeal", "a2", issued.code)


def test_contact_code_needs_six_digits() -> None:
    with pytest.raises(ValueError, match="6 digits"):
        issue_contact_code(SystemEntropy(), key=KEY, purpose="appeal", owner_id="a1", digits=5)


def test_contact_code_outcomes() -> None:
    issued = issue_contact_code(SeededEntropy(7), key=KEY, purpose="appeal", owner_id="a1", digits=6)
    wrong = f"{(int(issued.code) + 1) % 1_000_000:06d}"
    assert _check(issued.code, issued.code_hash) is CodeCheck.ACCEPTED
    spaced = f"{issued.code[:3]} {issued.code[3:]}"
    assert _check(spaced, issued.code_hash) is CodeCheck.ACCEPTED
    assert _check(wrong, issued.code_hash) is CodeCheck.WRONG
    assert _check("12345", issued.code_hash) is CodeCheck.MALFORMED
    assert _check("١٢٣٤٥٦", issued.code_hash) is CodeCheck.MALFORMED  # non-ASCII digits
    assert _check(issued.code, issued.code_hash, owner_id="a2") is CodeCheck.WRONG


def test_expired_used_and_exhausted_codes_never_say_whether_the_guess_was_right() -> None:
    issued = issue_contact_code(SeededEntropy(8), key=KEY, purpose="appeal", owner_id="a1", digits=6)
    assert _check(issued.code, issued.code_hash, at=EXPIRES) is CodeCheck.EXPIRED
    assert _check(issued.code, issued.code_hash, used=True) is CodeCheck.EXPIRED
    assert _check(issued.code, issued.code_hash, attempts=5) is CodeCheck.EXHAUSTED
    assert _check(issued.code, issued.code_hash, attempts=4) is CodeCheck.ACCEPTED


RECORDS = [TransactionRecord(Decimal("100.00") + 10 * i, AT - timedelta(days=i)) for i in range(12)]


def test_recent_transactions_keeps_the_newest() -> None:
    newest = recent_transactions(reversed(RECORDS), 10)
    assert [r.amount for r in newest] == [Decimal("100.00") + 10 * i for i in range(10)]


def test_amount_tolerance_is_relative_and_exact() -> None:
    assert amount_within(Decimal("101.00"), Decimal("100.00"), Decimal("0.01"))
    assert amount_within(Decimal("99.00"), Decimal("100.00"), Decimal("0.01"))
    assert not amount_within(Decimal("101.01"), Decimal("100.00"), Decimal("0.01"))
    assert not amount_within(Decimal("0"), Decimal("0"), Decimal("0.01"))
    assert not amount_within(Decimal("NaN"), Decimal("100"), Decimal("0.01"))
    assert not amount_within(Decimal("-100"), Decimal("-100"), Decimal("0.01"))


def test_recent_transaction_needs_amount_and_day() -> None:
    kwargs: dict[str, Any] = {"count": 10, "tolerance": Decimal("0.01")}
    day3 = (AT - timedelta(days=3)).date()
    assert matches_recent_transaction(Decimal("131.20"), day3, RECORDS, **kwargs)
    assert not matches_recent_transaction(Decimal("131.20"), day3 - timedelta(days=1), RECORDS, **kwargs)
    assert not matches_recent_transaction(Decimal("131.40"), day3, RECORDS, **kwargs)
    # The 11th most recent transaction is too old to count.
    day10 = (AT - timedelta(days=10)).date()
    assert matches_recent_transaction(Decimal("190.00"), day10 + timedelta(days=1), RECORDS, **kwargs)
    assert not matches_recent_transaction(Decimal("200.00"), day10, RECORDS, **kwargs)
    assert not matches_recent_transaction(Decimal("100"), AT.date(), [], **kwargs)


def test_recent_transaction_day_is_the_utc_calendar_day() -> None:
    late = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)
    records = [TransactionRecord(Decimal("50"), late.astimezone(ZoneInfo("Asia/Tokyo")))]
    assert matches_recent_transaction(Decimal("50"), date(2026, 3, 1), records, count=10, tolerance=Decimal(0))
    assert not matches_recent_transaction(Decimal("50"), date(2026, 3, 2), records, count=10, tolerance=Decimal(0))


def test_identity_document_matches_the_accounts_hmac() -> None:
    stored = keyed_hash(KEY, normalize_document_number("AB123456"))
    assert document_hmac(KEY, "ab 123-456") == stored
    assert document_matches("ab 123-456", stored_hmac=stored, key=KEY)
    assert not document_matches("AB123457", stored_hmac=stored, key=KEY)
    assert not document_matches("AB123456", stored_hmac=stored, key="another-key")
    assert not document_matches("AB123456", stored_hmac=None, key=KEY)
    assert not document_matches("--", stored_hmac=keyed_hash(KEY, ""), key=KEY)


def test_flow_tokens() -> None:
    token, digest = new_flow_token(SystemEntropy())
    assert len(token) >= 43  # 256 bits
    assert token not in digest
    assert token_matches(token, digest)
    assert not token_matches(token[:-1] + ("A" if token[-1] != "A" else "B"), digest)
    assert not token_matches("short", digest)
    assert not token_matches("x" * 500, digest)
    other, other_digest = new_flow_token(SystemEntropy())
    assert other != token
    assert not token_matches(other, digest)
