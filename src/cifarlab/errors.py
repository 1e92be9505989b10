"""Errors a user can act on.

Each carries one line that names the problem and what to do; the CLI prints it without
a traceback and exits non-zero. Programming errors stay ordinary exceptions.
"""


class CifarlabError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 1


class DataError(CifarlabError):
    """A data set that cannot be found, read or trusted."""


class ModelError(CifarlabError, KeyError):
    """An unknown model name or bad model arguments."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ConfigError(CifarlabError, ValueError):
    """A configuration value that is unknown or out of range."""


class TrainingInterrupted(CifarlabError):
    """Ctrl-C during training; last.pt holds the last finished epoch."""

    exit_code = 130

    def __init__(self, message: str, run_dir=None, epoch: int = 0):
        super().__init__(message)
        self.run_dir, self.epoch = run_dir, epoch


class BudgetTooShort(ConfigError):
    """A time budget that cannot hold even the shortest run of the model on this machine;
    ``needs_s``: the budget that would hold it here (None where not planned)."""

    def __init__(self, message: str, needs_s: float | None = None):
        super().__init__(message)
        self.needs_s = needs_s


class TrainingDiverged(CifarlabError):
    """The loss became non-finite or exploded."""


class ImageError(CifarlabError):
    """A file that is not a readable image."""
