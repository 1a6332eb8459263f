"""The `compress` command line: each command parses options, calls the library, and prints."""

from compress.cli.main import main

__all__ = ["main"]
