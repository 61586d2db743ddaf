"""The project's own exception base: what a user's input or setting can cause.

Boundaries (the command line, the app) show an `IGGTError` as its message, because it describes
the user's input. Anything else is a fault of the software: logged with its traceback, and the
user is told so in one short line. It stays a `ValueError` so callers that catch bad values keep
working.
"""
from __future__ import annotations


class IGGTError(ValueError):
    """Bad input or settings, described in words a user can act on."""
