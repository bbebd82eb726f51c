"""signoff.neutralise: agent text shown to a human hides nothing and renders literally."""

from __future__ import annotations

import html as html_lib
import json
import logging
import unicodedata
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from channels.console import ConsoleNotifier
from signoff import neutralise
from signoff.models import ActionRequest, ActionStatus, Status
from workflows.messages import NotifyInput

ATTACKS = [
    "ok\u202etxt.exe",  # right-to-left override
    "DROP\u200bTABLE",  # zero-width space
    "\x1b[2J\x1b[31mfake\x1b[0m",  # ESC: clear screen, colour
    "a\u2066b\u2069c\u200e\u200f\u061c",  # isolates and marks
    "\ufeffbom\u2060joiner\u00adsoft",
    "\x85next-line\x9bcsi",  # C1
    "\u3164filler\u115f",
]
SURFACES = [
    neutralise.visible,
    neutralise.one_line,
    neutralise.markdown,
    neutralise.mrkdwn,
    neutralise.mrkdwn_code,
    neutralise.slack_plain,
    neutralise.rich,
    neutralise.html,
    neutralise.csv_cell,
    lambda t: neutralise.visible_json({"k": t}),
]


def _hidden(text: str) -> list[str]:
    return [c for c in text if c != "\n" and neutralise.is_hidden(c)]


@given(st.text())
def test_no_surface_lets_a_hidden_character_through(text: str) -> None:
    for surface in SURFACES:
        shown = surface(text)
        assert _hidden(shown) == [], (surface, text, shown)
        assert not any(unicodedata.category(c) in ("Cc", "Cf") and c != "\n" for c in shown)


@given(st.text(), st.text())
def test_visible_is_injective(a: str, b: str) -> None:
    if a != b:
        assert neutralise.visible(a) != neutralise.visible(b)
        assert neutralise.visible(a, multiline=True) != neutralise.visible(b, multiline=True)
        assert neutralise.html(a) != neutralise.html(b)
        assert neutralise.markdown(a) != neutralise.markdown(b)


@given(st.text(), st.text())
def test_visible_json_is_injective_and_valid(a: str, b: str) -> None:
    shown = neutralise.visible_json({"v": a}, indent=2)
    assert json.loads(shown) == {"v": a}  # still JSON, decoding to exactly the params
    if a != b:
        assert shown != neutralise.visible_json({"v": b}, indent=2)


@given(st.text())
def test_html_decodes_to_the_visible_text(text: str) -> None:
    assert html_lib.unescape(neutralise.html(text)) == neutralise.visible(text, multiline=True)


@given(st.text())
def test_markdown_renders_as_the_literal_text(text: str) -> None:
    tokens = MarkdownIt("commonmark").parseInline(neutralise.markdown(text, multiline=False))
    children = tokens[0].children or []
    assert {t.type for t in children} <= {"text", "softbreak", "hardbreak"}
    rendered = "".join(t.content for t in children if t.type == "text")
    assert rendered == neutralise.visible(text)


def test_attacks_are_escaped_visibly() -> None:
    assert neutralise.visible(ATTACKS[0]) == "ok\\u202etxt.exe"
    assert neutralise.visible(ATTACKS[1]) == "DROP\\u200bTABLE"
    assert neutralise.visible(ATTACKS[2]).startswith("\\u001b[2J")
    assert neutralise.visible("a\\u202eb") == "a\\\\u202eb"  # typed, not real: distinct
    assert "\\u0085" in neutralise.visible(ATTACKS[5])
    assert neutralise.visible("x\ny\tz") == "x\\ny\\tz"
    assert neutralise.visible("x\ny", multiline=True) == "x\ny"


def test_markdown_heading_and_link_are_inert() -> None:
    text = "# Urgent\nSee [runbook portal](https://evil.example/login) **now**"
    html = MarkdownIt("commonmark").render(neutralise.markdown(text))
    assert "<h1>" not in html
    assert "<a " not in html
    assert "<strong>" not in html
    assert "[runbook portal](https://evil.example/login)" in html


def test_mrkdwn_kills_mentions_links_and_formatting() -> None:
    shown = neutralise.mrkdwn("<!channel> <!here> <@U123> <https://evil|runbook> *b* _i_ ~s~ `c`")
    assert "<" not in shown
    assert ">" not in shown
    assert not set("*_~`") & set(shown)
    assert "&lt;https://evil|runbook&gt;" in shown
    code = neutralise.mrkdwn_code("```<!channel>```")
    assert "`" not in code
    assert "<" not in code


def test_rich_markup_cannot_style_or_hide() -> None:
    from rich.console import Console

    console = Console(record=True, width=200, force_terminal=True)
    console.print(neutralise.rich("[bold red]x[/] \x1b[8mhidden"))
    out = console.export_text()
    assert "[bold red]x[/]" in out
    assert "\\u001b[8mhidden" in out
    assert "\x1b[8m" not in out


def test_csv_formulas_are_prefixed() -> None:
    for formula in ('=HYPERLINK("http://evil")', "+1", "-1+2", "@SUM(A1)", "\t=1", "\r=1"):
        assert neutralise.csv_cell(formula).startswith("'")
        assert neutralise.csv_formula_safe(formula) == "'" + formula
    assert neutralise.csv_cell("plain") == "plain"
    assert neutralise.csv_formula_safe("a=b") == "a=b"


async def test_console_channel_logs_everything_uncut_and_visible(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tail = "a" * 10_000 + " DROP TABLE x"
    request = ActionRequest(
        action="noop",
        target="two-db",
        params={"sql": tail, "note": "\x1b[2K\rforged line\n"},
        justification="ok\u202eevil\u200b\nINFO fake approval",
        requester="agent:bot",
        on_behalf_of="erin@example.com",
    )
    status = ActionStatus(
        id="act-console",
        digest=request.digest,
        request=request,
        status=Status.PENDING_APPROVAL,
        created_at=datetime.now(UTC),
        owner="dave@example.com",
    )
    with caplog.at_level(logging.INFO, logger="signoff.notify"):
        await ConsoleNotifier().post(NotifyInput(channel="console", status=status, groups=["dba"]))
    [line] = [r.getMessage() for r in caplog.records]
    assert "\n" not in line
    assert "\r" not in line
    assert not [c for c in line if neutralise.is_hidden(c)]
    assert tail in line  # nothing cut
    assert "ok\\u202eevil\\u200b\\nINFO fake approval" in line
    for who in ("agent:bot", "erin@example.com", "dave@example.com", status.digest):
        assert who in line
