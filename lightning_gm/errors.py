"""Errors that the ``lightning_gm`` command reports as one clear message instead of a traceback.

Every error raised on purpose by the platform derives from :class:`LightningGMError`; the command
line catches it and prints ``lightning_gm: error: <message>``.
"""

from __future__ import annotations

__all__ = ["LightningGMError", "DataFileError", "DivergenceError", "ConfigError"]


class LightningGMError(Exception):
    """Base class of the platform's own errors: the message names the key, file or value and the fix."""


class DataFileError(LightningGMError):
    """A data file is missing, cannot be downloaded, fails its checksum or cannot be parsed."""


class DivergenceError(LightningGMError):
    """Training produced a NaN or infinite loss or metric."""


class ConfigError(LightningGMError):
    """A configuration value is inconsistent in a way the type checker cannot see."""
