"""What an SRE sees in the Temporal Web UI, checked in a real browser against `signoff dev`.

Chromium is Debian's (`make test` installs it when running as root); Playwright only drives it.
The screenshots land in docs/, where the README shows them.
"""

from __future__ import annotations

import re
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.test_devstack import auth, free_ports, running_stack

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS = Path(__file__).resolve().parent.parent / "docs"
PENDING_QUERY = 'SignoffStatus="pending_approval"'
SUMMARY = "sql.execute on prod-db by agent:etl-bot, waits for 1 of dba"
CURRENT = "Waits for: 0 of 1 from dba (eligible now: dba)"
COLUMNS = ["SignoffAction", "SignoffTarget", "SignoffRequester", "SignoffRisk", "SignoffGroups"]


def submit(http: httpx.Client, body: dict[str, Any], until: str) -> dict[str, Any]:
    """agent:etl-bot asks for an action; its status once it reached `until`."""
    response = http.post("/v1/actions", headers=auth("agent:etl-bot"), json=body)
    assert response.status_code == 202, response.text
    status: dict[str, Any] = response.json()
    for _ in range(150):
        if status["status"] == until:
            return status
        time.sleep(0.1)
        status = http.get(f"/v1/actions/{status['id']}", headers=auth("agent:etl-bot")).json()
    raise AssertionError(f"never reached {until}: {status}")


def rendered_markdown(page: Page, ui: str, *, expect_text: str) -> list[str]:
    """The texts of the UI's rendered-markdown frames, once one of them shows `expect_text`."""
    texts: list[str] = []
    for _ in range(40):
        frames = [f for f in page.frames if f.url.startswith(f"{ui}/render")]
        texts = [" ".join(f.locator("body").inner_text().split()) for f in frames]
        if any(expect_text in t for t in texts):
            return texts
        page.wait_for_timeout(250)
    raise AssertionError(f"{expect_text!r} never rendered; frames show {texts}")


def test_sre_finds_and_understands_a_pending_action_in_the_ui(tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (make test installs it as root)")
    from playwright.sync_api import expect, sync_playwright

    with (
        running_stack(tmp_path / "data", tmp_path, free_ports(3)) as stack,
        httpx.Client(base_url=stack.gateway) as http,
    ):
        pending = submit(
            http,
            {
                "action": "sql.execute",
                "target": "prod-db",
                "params": {"statement": "ALTER TABLE orders ADD COLUMN region text"},
                "justification": "the EU revenue report needs a region column",
            },
            until="pending_approval",
        )
        done = submit(
            http,
            {"action": "noop", "target": "sandbox-1", "justification": "smoke test"},
            until="succeeded",
        )
        ui = f"http://127.0.0.1:{stack.ui_port}"
        query = urllib.parse.quote(PENDING_QUERY)

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1920, "height": 900})
            # Generous: the UI loads history after the page, on a machine running other tests.
            page.set_default_timeout(20_000)
            expect.set_options(timeout=20_000)

            # The list, filtered by our search attribute (visibility lags a little: reload).
            row = page.locator("tbody tr", has_text=pending["id"])
            for _ in range(20):
                page.goto(f"{ui}/namespaces/default/workflows?query={query}")
                page.wait_for_load_state("networkidle")
                if row.count():
                    break
                time.sleep(0.5)
            expect(row).to_have_count(1)
            expect(page.get_by_text(done["id"])).to_have_count(0)  # filtered out
            expect(page.get_by_test_id("add-filter-button")).to_be_visible()
            expect(page.get_by_text(PENDING_QUERY.replace("=", " = "))).to_be_visible()

            # The list cannot show static summaries (visibility does not carry them); the
            # search attributes say the same at a glance, as columns.
            page.get_by_test_id("workflows-summary-table-configuration-button").click()
            for column in ("Run ID", "End"):  # room for ours; End is empty while pending
                page.get_by_label(f"Remove {column} column").click()
            for column in COLUMNS:
                page.get_by_label(f"Add {column} column").click()
            page.get_by_test_id("drawer-close-button").click()
            expect(page.get_by_test_id("drawer-close-button")).to_be_hidden()
            page.wait_for_timeout(500)  # the drawer slides out
            for text in ("sql.execute", "prod-db", "agent:etl-bot", "high", "dba"):
                expect(row).to_contain_text(text)
            page.screenshot(path=str(DOCS / "ui-workflows.png"))

            # The workflow page: the timer's summary and the local activities in the timeline
            # (the console channel is written by the workflow itself: no activity of its own).
            row.get_by_role("link", name=pending["id"]).click()
            expect(page.get_by_text("approval stage 1 (30m)").first).to_be_visible()
            expect(page.get_by_text("admit_request").first).to_be_visible()
            page.screenshot(path=str(DOCS / "ui-timeline.png"))

            # Static summary and current details: what the action waits for, and until when.
            page.get_by_role("tab", name="User Metadata").click()
            # The UI renders each markdown field in its own frame.
            rendered = rendered_markdown(page, ui, expect_text=CURRENT)
            summary = next(t for t in rendered if t.startswith(SUMMARY))
            assert re.fullmatch(re.escape(SUMMARY) + r", expires \d\d:\d\d UTC", summary)
            current = next(t for t in rendered if CURRENT in t)
            assert "sql.execute on prod-db by agent:etl-bot — pending_approval" in current
            assert f"Digest: {pending['digest']}" in current
            page.screenshot(path=str(DOCS / "ui-workflow.png"))
            browser.close()
