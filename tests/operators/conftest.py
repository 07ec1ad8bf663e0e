from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.operators.factories import TestOperator, make_operator


@pytest.fixture
def new_operator(app, db_session, clock) -> Callable[[str, str], TestOperator]:
    """``new_operator(name, role)`` creates and commits an operator."""
    return lambda name, role: make_operator(app, db_session, clock, name, role)
