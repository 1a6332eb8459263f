"""Errors a user can act on. Library code raises them as plain exceptions; the CLI prints one line."""


class CompressError(ValueError):
    """A problem with the user's input or files, named in the message."""
