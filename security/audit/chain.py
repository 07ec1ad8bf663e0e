"""Pure hash-chain arithmetic for the audit log (no database)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

GENESIS_HASH = "0" * 64
EMPTY_HEAD = (0, GENESIS_HASH)
"""(seq, hash) of the head of an empty chain."""


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces) so a hash is reproducible on every backend."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def entry_hash(
    *,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    subject_type: str,
    subject_id: str,
    data: Mapping[str, Any],
    request_id: str | None,
    prev_hash: str,
) -> str:
    """SHA-256 over every field of an entry and the previous entry's hash."""
    material = canonical_json(
        {
            "seq": seq,
            "at": at.isoformat(timespec="microseconds"),
            "actor": actor,
            "action": action,
            "subject": [subject_type, subject_id],
            "data": data,
            "request_id": request_id,
            "prev": prev_hash,
        }
    )
    return hashlib.sha256(material.encode()).hexdigest()


@dataclass(frozen=True)
class ChainRecord:
    seq: int
    at: datetime
    actor: str
    action: str
    subject_type: str
    subject_id: str
    data: Mapping[str, Any]
    request_id: str | None
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class ChainBreak:
    """Where the chain first stops verifying, and why."""

    seq: int
    problem: str


def verify_chain(
    records: Iterable[ChainRecord], *, head_seq: int, head_hash: str, after: tuple[int, str] = EMPTY_HEAD
) -> tuple[int, ChainBreak | None]:
    """Walk the chain in ``seq`` order. Return (entries checked, first break or None).

    Detects an edited entry (its hash no longer matches), a deleted one (a gap in ``seq`` or a
    ``prev_hash`` that names a missing entry), reordering (links that do not match) and a truncated tail
    (the head names an entry that is gone).

    ``after``: (seq, hash) of an entry verified before; ``records`` are the entries after it, which must
    link onto it. Entries up to it are taken as verified, not checked again.
    """
    expected_seq = after[0] + 1
    prev_hash = after[1]
    checked = 0
    for record in records:
        if record.seq != expected_seq:
            return checked, ChainBreak(expected_seq, f"entry {expected_seq} is missing (next is {record.seq})")
        if record.prev_hash != prev_hash:
            return checked, ChainBreak(record.seq, "link to the previous entry does not match (deleted or reordered)")
        recomputed = entry_hash(
            seq=record.seq,
            at=record.at,
            actor=record.actor,
            action=record.action,
            subject_type=record.subject_type,
            subject_id=record.subject_id,
            data=record.data,
            request_id=record.request_id,
            prev_hash=record.prev_hash,
        )
        if recomputed != record.hash:
            return checked, ChainBreak(record.seq, "entry content does not match its hash (edited)")
        prev_hash = record.hash
        expected_seq += 1
        checked += 1
    if expected_seq - 1 != head_seq or prev_hash != head_hash:
        problem = f"chain ends at entry {expected_seq - 1} but the head names entry {head_seq} (tail deleted)"
        return checked, ChainBreak(expected_seq, problem)
    return checked, None
