"""The one error for an identity provider that cannot answer: retry later, never guess."""


class IdentityProviderUnavailable(Exception):
    """An identity provider's keys or group membership could not be fetched just now."""
