"""Errors that reach users. Each message says what went wrong, where, and how to fix it."""

from __future__ import annotations


class SlmragError(Exception):
    """Base class: the CLI and the UI print these as one readable message, never a traceback."""


class ConfigError(SlmragError):
    """A pack or settings file is invalid (the message names the file and the field)."""


class PackNotFound(SlmragError):
    pass


class ModelNotFound(SlmragError):
    pass


class MissingDependency(SlmragError):
    pass


class IndexDamaged(SlmragError):
    """The index folder cannot be used as it is: missing, locked by a writer, inconsistent or damaged, or
    built with another embedder (the message says which, and how to fix it)."""


class InputError(SlmragError):
    """A question or upload failed validation."""


class DocumentError(SlmragError):
    """One document could not be read; ingest reports it and carries on with the others."""


def require(module: str, extra: str | None = None):
    """Import a heavy optional module lazily, with an install hint when it is missing."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        package = extra or module
        raise MissingDependency(
            f"This feature needs the Python package '{package}', which is not installed. "
            f"Install it with: pip install {package}"
        ) from exc
