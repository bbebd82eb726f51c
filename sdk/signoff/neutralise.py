"""Make agent-written text safe to show a human, one function per surface.

An agent controls justifications, params, ids, targets, names, reasons and errors. Before any
of it reaches a person it goes through here, so that what the approver sees is what runs:
control characters, bidi overrides, zero-width and other invisible characters become visible
escapes (`\\u202e`), and each surface's markup (Markdown, Slack mrkdwn, rich, HTML, CSV
formulas) is escaped so agent text renders as literal text. Pure functions, no I/O.
"""

from __future__ import annotations

import html as _html
import json
import re
import unicodedata
from typing import Any

from rich.markup import escape as _rich_escape

# Letters and marks that render as nothing (Hangul fillers, the combining grapheme joiner,
# variation selectors); Unicode does not class them as format characters, attackers use them.
_INVISIBLE = frozenset(
    "\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180e\u180f\u2800\u3164\uffa0"
    + "".join(chr(c) for c in range(0xFE00, 0xFE10))
)
# Categories never shown as themselves: control, format (bidi, zero-width), surrogate,
# private use, unassigned, and the line/paragraph separators.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def is_hidden(char: str) -> bool:
    """Whether `char` could change or hide what a reader sees (and so must be escaped)."""
    return char in _INVISIBLE or unicodedata.category(char) in _HIDDEN_CATEGORIES


def _escape_char(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    if code > 0xFFFF:
        return f"\\U{code:08x}"
    return f"\\u{code:04x}"


def visible(text: str, *, multiline: bool = False) -> str:
    """`text` with every hidden character as a `\\u` escape (four hex digits); backslashes doubled.

    Doubling the backslash keeps it injective: a literal `\\u202e` typed by the agent stays
    distinguishable from a real U+202E. With `multiline`, line feeds stay line feeds.
    """
    out = []
    for char in text:
        if char == "\\":
            out.append("\\\\")
        elif multiline and char == "\n":
            out.append(char)
        elif is_hidden(char):
            out.append(_escape_char(char))
        else:
            out.append(char)
    return "".join(out)


def visible_json(value: Any, *, indent: int | None = None, sort_keys: bool = False) -> str:
    """`value` as JSON text in which no hidden character appears raw (still valid JSON)."""
    separators = (",", ":") if indent is None else (",", ": ")
    text = json.dumps(
        value, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys
    )
    # JSON already doubles backslashes and escapes C0; escape the rest the same way.
    return "".join(json.dumps(c)[1:-1] if is_hidden(c) and c != "\n" else c for c in text)


def one_line(text: str) -> str:
    """`text` made visible on a single line: for logs and table cells."""
    return visible(text)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!<>|~=&])")


def markdown(text: str, *, multiline: bool = True) -> str:
    """Agent text for a Markdown surface (a Teams TextBlock): literal, links and headings inert.

    CommonMark lets any ASCII punctuation be backslash-escaped; escaping all of it means no
    heading, list, emphasis, link or autolink can form. Line feeds become paragraph breaks.
    """
    return escape_markdown(visible(text, multiline=multiline))


def escape_markdown(shown: str) -> str:
    """Markdown escaping alone, for text already made visible (such as `visible_json`)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", shown).replace("\n", "\n\n")


# Slack has no escape for *, _, ~ and `: look-alikes that mrkdwn does not treat as markup.
_MRKDWN_LOOKALIKE = str.maketrans({"*": "\u2217", "_": "\u02cd", "~": "\u223c", "`": "\u02cb"})


def mrkdwn(text: str, *, multiline: bool = False) -> str:
    """Agent text for Slack mrkdwn: no mention, link, date or formatting can form.

    `&`, `<` and `>` are entity-escaped (Slack's own rule), which kills `<!here>`, `<@U…>`
    and `<https://…|label>`; the formatting characters become inert look-alikes.
    """
    shown = visible(text, multiline=multiline)
    shown = shown.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return shown.translate(_MRKDWN_LOOKALIKE)


def mrkdwn_code(text: str) -> str:
    """Agent text for inside a Slack ``` block: entities escaped, backticks cannot close it."""
    shown = visible(text, multiline=True)
    shown = shown.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return shown.replace("`", "\u02cb")


def slack_plain(text: str, *, multiline: bool = True) -> str:
    """Agent text for a Slack plain_text object (no markup is parsed there; hide nothing)."""
    return visible(text, multiline=multiline)


def rich(text: str, *, multiline: bool = True) -> str:
    """Agent text for rich console markup: hidden characters visible, `[` cannot open a tag."""
    return _rich_escape(visible(text, multiline=multiline))


def html(text: str, *, multiline: bool = True) -> str:
    """Agent text for HTML: hidden characters visible, then entity-escaped (quotes too)."""
    return _html.escape(visible(text, multiline=multiline), quote=True)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_formula_safe(text: str) -> str:
    """A data cell a spreadsheet cannot run as a formula: a leading `'` when it looks like one."""
    return "'" + text if text[:1] in _FORMULA_START else text


def csv_cell(text: str) -> str:
    """An evidence CSV cell: hidden characters visible, and never a formula."""
    if text[:1] in _FORMULA_START:
        return "'" + visible(text, multiline=True)
    return visible(text, multiline=True)
