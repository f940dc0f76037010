"""The one error type of the data layer, so callers can tell bad input from bugs."""

from __future__ import annotations


class DataError(ValueError):
    """A dataset root, split file or video that cannot be used; the message is one line."""
