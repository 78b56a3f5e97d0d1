"""The project's user errors: a problem in what the user gave (a config value, a file, a folder).

Every layer raises these (models, data, analysis, the drivers), so they live here, below all of
them: this module imports nothing of the package and nothing heavy. A driver ends on one of them
(or a subclass) with one line and exit code 1 instead of a traceback (:mod:`iqa_lightning.cli`).

The older places keep their names: ``iqa_lightning.cli.ConfigError``,
``iqa_lightning.data.records.AnnotationError``, ``iqa_lightning.data.images.ImageLoadError``,
``iqa_lightning.data.splits.SplitError``,
``iqa_lightning.data.instruct.conversations.InstructFormatError`` and
``iqa_lightning.checkpoints.UnsafeCheckpointError`` are these classes.
"""

from __future__ import annotations

import os

__all__ = [
    "USER_ERRORS",
    "AnnotationError",
    "ConfigError",
    "ImageLoadError",
    "InstructFormatError",
    "SplitError",
    "UnsafeCheckpointError",
]


class ConfigError(ValueError):
    """A config value the run cannot use; the message names the key (``trainer.max_epochs``)."""


class AnnotationError(ValueError):
    """An annotation file is malformed; the message names the file and where."""


class ImageLoadError(RuntimeError):
    """An image file could not be read or decoded.

    The message always names the file and the reason. The single-string constructor keeps
    the type intact when a DataLoader worker re-raises the error in the main process.

    Args:
        message: Full message; build it with :meth:`for_path` to get the standard wording.
        path: The file that failed, if known.
        reason: Why it failed, if known.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None, reason: str = ""):
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.reason = reason

    @classmethod
    def for_path(cls, path: str | os.PathLike, reason: str) -> ImageLoadError:
        """Build the error with the standard message naming ``path`` and ``reason``."""
        return cls(f"cannot load image '{path}': {reason}", path=path, reason=reason)

    def __reduce__(self):
        return (type(self), (str(self), self.path, self.reason))


class SplitError(ValueError):
    """A split cannot be built as configured; the message says what to change."""


class InstructFormatError(ValueError):
    """An instruction / question file is malformed; the message names the file and record."""


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint holds pickled objects beyond tensors and plain containers."""


#: The user-error types; an exception of one of them (or of a subclass) is a user error.
USER_ERRORS = (
    ConfigError,
    AnnotationError,
    ImageLoadError,
    SplitError,
    InstructFormatError,
    UnsafeCheckpointError,
)
