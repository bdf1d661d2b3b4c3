"""Errors that reach the user as one clear line."""


class UsageError(Exception):
    """Bad input: an impossible count, an unknown id, a malformed file.  CLI exit status 2."""
