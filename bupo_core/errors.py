"""Exceptions with messages that name the problem and the fix.

Every error a user can trigger with bad input derives from :class:`BupoError`, so the CLI
can print the message alone (no traceback) and exit with status 2.
"""

from __future__ import annotations


class BupoError(Exception):
    """Base class: a user-facing problem with a message that says how to fix it."""


class UnknownModelError(BupoError, ValueError):
    """The model name is neither a known alias, a local folder, nor a hub id."""


class ModelNotAvailableError(BupoError, OSError):
    """The model exists in principle but cannot be loaded here (offline, missing package)."""


class UnsupportedArchitectureError(BupoError, NotImplementedError):
    """The model's family has no entry in the architecture adapter."""


class LayerOutOfRangeError(BupoError, ValueError):
    """A layer index outside the valid range for this model (paper numbering)."""


class InputFormatError(BupoError, ValueError):
    """A malformed input file or argument; the message carries the file and line number."""


class ConfigMismatchError(BupoError, ValueError):
    """A resumed run whose configuration differs from the saved one."""
