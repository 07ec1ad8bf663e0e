"""Fixtures of the review API tests."""

from __future__ import annotations

import pytest

from tests.review.cases import Cases


@pytest.fixture
def cases(api, client, clock, app, db_session) -> Cases:
    return Cases(api=api, client=client, clock=clock, app=app, session=db_session)


@pytest.fixture
def ops(cases):
    """Two reviewers and a viewer, signed in through the API (Authorization headers)."""
    return {name: cases.token(cases.operator(name, role))
            for name, role in (("alice", "reviewer"), ("bruno", "reviewer"), ("vera", "viewer"))}
