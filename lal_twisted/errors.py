"""Errors shared across layers (a leaf module: it imports nothing of the project)."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A configuration mistake, with a message fit to show the user as is."""
