from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.operators.factories import TestOperator, make_operator
from tests.review.cases import Cases


@pytest.fixture
def new_operator(app, db_session, clock) -> Callable[[str, str], TestOperator]:
    """``new_operator(name, role)`` creates and commits an operator."""
    return lambda name, role: make_operator(app, db_session, clock, name, role)


@pytest.fixture
def cases(api, client, clock, app, db_session) -> Cases:
    return Cases(api=api, client=client, clock=clock, app=app, session=db_session)
