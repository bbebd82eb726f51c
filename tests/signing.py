"""The test suite's gateway key: every test that talks to workflows directly signs with it.

Importing this module (conftest does) writes a fresh key pair to a temporary directory and
points SIGNOFF_SIGNING_KEY and SIGNOFF_VERIFY_KEYS at it, so in-process settings, spawned
workers and gateways all trust the same key, as a deployment's gateway and workers do.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from workflows.signing import KeySet, Signer, generate_key_pair

KEY_DIR = Path(tempfile.mkdtemp(prefix="signoff-test-keys-"))
atexit.register(shutil.rmtree, KEY_DIR, ignore_errors=True)
PRIVATE_KEY = KEY_DIR / "gateway-signing.pem"
PUBLIC_KEYS = KEY_DIR / "public"
KID = generate_key_pair(PRIVATE_KEY, PUBLIC_KEYS / "gateway.pem")

os.environ["SIGNOFF_SIGNING_KEY"] = str(PRIVATE_KEY)
os.environ["SIGNOFF_VERIFY_KEYS"] = str(PUBLIC_KEYS)

SIGNER = Signer.load(PRIVATE_KEY)
KEYS = KeySet.load(PUBLIC_KEYS)
