"""The one error type for user mistakes: the CLI prints its message on one line and exits 2."""

__all__ = ["NatlearnError"]


class NatlearnError(Exception):
    """A problem with the user's input (path, value, checkpoint), with the fix in its message."""
