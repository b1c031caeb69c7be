"""The errors a person running l2sparse can cause and fix: a bad option, a bad file, a run that blew up.

Every command catches [`UserError`][l2sparse.errors.UserError] alone and prints it as one line with exit code 2;
anything else is a bug and keeps its traceback. None of them is a ``ValueError``, so an internal ``ValueError``
is never mistaken for a bad option.
"""

from __future__ import annotations


class UserError(Exception):
    """Input the user can fix; the message names the option or file and what was expected."""


class ConfigError(UserError):
    """An option (or configuration field) out of range, unknown or inconsistent with another; the message starts
    with the option's name, e.g. ``lr: expected a finite number > 0, got -1.0``."""


class DataError(UserError):
    """A dataset file or folder that is missing or not in the expected format; the message names the path."""


class TaskFileError(UserError):
    """A task or split definition that is incomplete or invalid; the message names the file."""


class CheckpointError(UserError):
    """A checkpoint file that is missing, unreadable, truncated or of another run."""


class BlowUpError(UserError):
    """A loss, λ or weight that became NaN or infinite during training."""
