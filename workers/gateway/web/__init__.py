"""The approval page's parts: sessions, OIDC sign-in, WebAuthn step-up and the HTML."""
