"""A real Chromium (Debian's /usr/bin/chromium) driven by Playwright against the app served on 127.0.0.1.

The app runs in werkzeug's threaded server on a free port, on the ``live_app`` database (real commits,
truncated afterwards). Playwright never downloads a browser here: it launches the system Chromium.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from security.permissions import ALL_SCOPES
from security.runtime import runtime
from tests.conftest import issue_key
from tests.operators.factories import TestOperator, make_operator

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
SCREENSHOTS_ENV = "FOXGUARD_SCREENSHOTS_DIR"
"""Set to a directory (scripts/screenshots uses docs/screenshots) to keep the pages' screenshots."""

if not CHROMIUM.exists():
    pytest.skip(
        f"browser tests need Debian's Chromium at {CHROMIUM} (apt-get install -y chromium; .ci/run does it)",
        allow_module_level=True,
    )

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (dev extra) is not installed")


@dataclass
class LiveServer:
    url: str
    app: object

    def operator(self, name: str, role: str, clock) -> TestOperator:
        session = runtime(self.app).session_factory()  # type: ignore[arg-type]
        try:
            return make_operator(self.app, session, clock, name, role)  # type: ignore[arg-type]
        finally:
            session.close()

    def backend(self, clock) -> object:
        """The wallet backend: a test client sending a fresh service key (real commits)."""
        from tests.conftest import ApiClient

        session = runtime(self.app).session_factory()  # type: ignore[arg-type]
        try:
            key = issue_key(session, clock, f"backend-{uuid.uuid4().hex[:12]}", ALL_SCOPES)
        finally:
            session.close()
        return ApiClient(self.app.test_client(), key)  # type: ignore[attr-defined]

    def risk_lock(self, clock, account_id: str, *, amount: str = "900.00") -> dict:
        """Make the risk engine lock ``account_id`` (a transaction to a deny-listed address)."""
        api = self.backend(clock)
        assert api.put(f"/v1/accounts/{account_id}", json={"email": f"{account_id}@example.com",
                                                            "home_country": "DE"}).status_code == 201
        api.put("/v1/deny-list/address/0xbad", json={"reason": "known mixer"})
        answer = api.post("/v1/events/transaction", json={
            "event_id": f"tx-{account_id}", "account_id": account_id, "amount": amount, "currency": "EUR",
            "destination": {"address": "0xbad", "country": "DE"}, "occurred_at": clock.now().isoformat(),
            "context": {"ip": "84.150.20.10", "country": "DE", "device_id": "d1", "user_agent": "Mozilla/5.0"},
        }).get_json()
        assert answer["decision"] == "block", answer
        return answer

    def open_lock_id(self, account_id: str) -> str:
        from sqlalchemy import select

        from security.locks.models import Lock

        session = runtime(self.app).session_factory()  # type: ignore[arg-type]
        try:
            return str(session.scalars(select(Lock.id).where(Lock.account_id == account_id)).one())
        finally:
            session.close()

    def seed_accounts(self, clock, per_day: list[int]) -> None:
        """Register ``per_day[i]`` accounts on each of the ``len(per_day)`` days ending today (real API calls)."""
        session = runtime(self.app).session_factory()  # type: ignore[arg-type]
        try:
            key = issue_key(session, clock, "seed-backend", ALL_SCOPES)
        finally:
            session.close()
        client = self.app.test_client()  # type: ignore[attr-defined]
        today = clock.now()
        for offset, count in enumerate(reversed(per_day)):
            clock.set(today - timedelta(days=offset, hours=2))
            for index in range(count):
                response = client.put(
                    f"/v1/accounts/seed-{offset}-{index}", json={"home_country": "DE"},
                    headers={"Authorization": f"Bearer {key}"},
                )
                assert response.status_code == 201, response.get_json()
        clock.set(today)


@pytest.fixture
def live_server(live_app) -> Iterator[LiveServer]:
    server = make_server("127.0.0.1", 0, live_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield LiveServer(url=f"http://127.0.0.1:{server.server_port}", app=live_app)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def new_page(browser, live_server) -> Iterator[Callable[..., object]]:
    """``new_page(width=1280, height=800)``: a page in a fresh context (its own cookies)."""
    contexts = []

    def make(width: int = 1280, height: int = 800):
        context = browser.new_context(base_url=live_server.url, viewport={"width": width, "height": height})
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def screenshot() -> Callable[[object, str], None]:
    """Save a full-page screenshot when FOXGUARD_SCREENSHOTS_DIR is set (else do nothing)."""
    target = os.environ.get(SCREENSHOTS_ENV)

    def save(page, name: str) -> None:
        if target:
            Path(target).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(target) / f"{name}.png"), full_page=True)

    return save
