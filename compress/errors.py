"""Errors a user can act on: the CLI prints them as one line and exits non-zero."""

import click


class CompressError(click.ClickException):
    """A problem with the user's input or files, reported without a traceback."""

    exit_code = 2

    def format_message(self) -> str:
        return self.message
