"""Fixtures of the review API tests."""

from __future__ import annotations

import pytest

from tests.review.cases import Cases


@pytest.fixture
def cases(api, client, clock, app, db_session) -> Cases:
    return Cases(api=api, client=client, clock=clock, app=app, session=db_session)
