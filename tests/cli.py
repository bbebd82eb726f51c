"""The whole `signoff` command as an installed user has it: SDK commands plus the server's."""

from signoff.cli import build_app

app = build_app()
