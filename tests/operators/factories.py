"""Building operators for tests (shared by the operator, console and browser tests)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pyotp
from flask import Flask
from sqlalchemy.orm import Session

from security.audit.services import AuditLog
from security.clock import Clock
from security.operators.models import Operator
from security.operators.services import OperatorService
from security.operators.settings import OperatorSettings
from security.runtime import runtime

PASSWORD = "crimson-lantern-harbour-47"
"""Passes the password policy; shared by every test operator."""


@dataclass
class TestOperator:
    __test__ = False  # not a test class for pytest

    id: str
    name: str
    role: str
    secret: str
    password: str = PASSWORD

    def code(self, at: datetime) -> str:
        """The operator's TOTP code at ``at``, computed independently of the app (pyotp)."""
        return pyotp.TOTP(self.secret).at(at)


def operator_service(app: Flask, session: Session, clock: Clock) -> OperatorService:
    rt = runtime(app)
    return OperatorService(
        session,
        clock=clock,
        entropy=rt.entropy,
        audit=AuditLog(session, clock=clock),
        hasher=rt.password_hasher,
        policy=rt.password_policy,
        secret_box=rt.secret_box,
        settings=OperatorSettings.from_settings(rt.settings),
    )


def make_operator(app: Flask, session: Session, clock: Clock, name: str, role: str) -> TestOperator:
    """Create and commit an operator; return its name, role and TOTP secret."""
    created = operator_service(app, session, clock).create(name, role, PASSWORD, actor="test")
    session.commit()
    operator: Operator = created.operator
    return TestOperator(id=str(operator.id), name=name, role=role, secret=created.enrollment.secret)
