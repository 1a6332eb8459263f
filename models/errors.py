"""The error every model family raises for a name it cannot build (its own module so that the families
import it without importing the package that dispatches to them)."""


class UnknownArchError(ValueError):
    """An architecture name that no family recognises."""
