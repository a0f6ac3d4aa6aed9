"""The one user-facing error type, and its named kinds.

The CLI prints ``str(error)`` on one line and exits non-zero; the HTTP service turns ``code`` and
``status`` into a JSON error body. Anything that is the caller's mistake raises one of these, never
a traceback from deep inside torch or SQLite.
"""

from __future__ import annotations


class PersonaEngineError(Exception):
    """A mistake the caller can fix: bad input, an unknown name, a missing model."""

    code = "invalid_input"
    status = 400

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class InvalidInputError(PersonaEngineError):
    code = "invalid_input"
    status = 422


class NotFoundError(PersonaEngineError):
    code = "not_found"
    status = 404


class UnknownUserError(NotFoundError):
    code = "unknown_user"


class UnknownPluginError(NotFoundError):
    code = "unknown_plugin"


class NoModelError(NotFoundError):
    code = "no_model"


class ConflictError(PersonaEngineError):
    code = "conflict"
    status = 409


class StoreUnavailableError(PersonaEngineError):
    """The database cannot be reached, or refused us (a wrong URL, a server that is down)."""

    code = "store_unavailable"
    status = 503


class IngestError(PersonaEngineError):
    """A bad line in an ingest file; ``line`` is 1-based."""

    code = "bad_line"
    status = 422

    def __init__(self, message: str, *, line: int, stored: int = 0):
        super().__init__(message)
        self.line = line
        self.stored = stored
