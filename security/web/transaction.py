"""One database session per request; the request commits it.

Services only add and flush. A view that returns normally has its work committed before the response
leaves; if the commit fails, the client gets the error instead of a success it cannot trust. A raised
error rolls everything back (see ``problems.init_app``).
"""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, current_app, g
from sqlalchemy.orm import Session

from security.db import is_sqlite
from security.runtime import runtime

log = logging.getLogger("security.web")


def request_session() -> Session:
    """The session of the current request, opened on first use."""
    session: Session | None = g.get("db_session")
    if session is None:
        session = runtime(current_app).session_factory()
        g.db_session = session
    return session


def abandon_request_session() -> None:
    """Roll back whatever the request did (called when an error is raised)."""
    session: Session | None = g.get("db_session")
    g.db_rollback = True
    if session is not None:
        try:
            session.rollback()
        except Exception:  # the connection may be gone; the session is discarded anyway
            log.warning("rollback failed", exc_info=True)


def end_read_phase() -> None:
    """Before slow work that needs no database (a password hash check): on SQLite, commit the request's
    transaction, which so far has only read.

    On SQLite every transaction holds the database's write lock from its first statement (``BEGIN
    IMMEDIATE``), so slow work inside it would stop every other request; the next statement starts a new
    transaction. PostgreSQL's reads hold nothing that others wait for, so nothing happens there.
    """
    session: Session | None = g.get("db_session")
    if session is None or not is_sqlite(session):
        return
    if session.new or session.dirty or session.deleted:
        raise RuntimeError("end_read_phase() after changes: they would be committed early")
    session.commit()


def respond_no_sooner_than(seconds: float) -> None:
    """Hold this request's response until ``seconds`` after the request started, commit included.

    For flows that must not reveal by their timing which branch they took (e.g. a reset request for an
    unknown identifier writes less than one for a real account). Choose ``seconds`` above the slow
    branch's usual duration: the answer then always takes that long.
    """
    started = g.get("started", time.perf_counter())
    g.respond_not_before = started + seconds


def _hold() -> None:
    deadline: float | None = g.get("respond_not_before")
    if deadline is not None:
        remaining = deadline - time.perf_counter()
        if remaining > 0:
            time.sleep(remaining)


def _commit(response: Response) -> Response:
    session: Session | None = g.get("db_session")
    if session is None or g.get("db_rollback") or response.status_code >= 500:
        _hold()
        return response
    try:
        session.commit()
    except Exception as exc:
        from security.web.problems import from_exception

        abandon_request_session()
        _hold()
        return from_exception(exc)
    _hold()
    return response


def _close(_exc: BaseException | None) -> None:
    session: Session | None = g.pop("db_session", None)
    if session is not None:
        session.close()


def init_app(app: Flask) -> None:
    app.after_request(_commit)
    app.teardown_request(_close)
