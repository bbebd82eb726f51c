"""The README stays true: every setting documented, every local link resolving."""

from __future__ import annotations

import re
from pathlib import Path

from signoff.settings import ClientSettings
from workers.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_every_setting_is_in_the_configuration_reference() -> None:
    missing = [
        f"SIGNOFF_{name.upper()}"
        for name in (*Settings.model_fields, *ClientSettings.model_fields)
        if f"`SIGNOFF_{name.upper()}" not in README
    ]
    assert missing == []


def test_the_two_setup_commands_are_there() -> None:
    assert "make dev" in README
    assert "make test" in README


def test_local_links_and_images_resolve() -> None:
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    local = [t for t in targets if not re.match(r"^[a-z]+:", t)]
    assert local, "the README links to files in the repository"
    assert [t for t in local if not (ROOT / t).exists()] == []
