"""Errors a user can act on.

Everything kfnlp raises on purpose derives from :class:`KfnlpError`; the CLI turns
it into one line on stderr and a non-zero exit code, and only shows a traceback
with ``--debug``.
"""

import errno

# a full disk, an exhausted quota, a file size limit: what writing more cannot fix
DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
DISK_FULL_WORDS = (
    "no space left on device",
    "os error 28",
    "disk quota exceeded",
    "file too large",
    "database or disk is full",  # sqlite
)


def disk_full(exc: BaseException) -> bool:
    """True if ``exc`` or an exception it came from says the disk is full: an OSError's errno, or the
    words the libraries that wrap it keep (safetensors, torch, arrow raise their own classes)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_FULL_ERRNOS:
            return True
        if any(words in str(current).lower() for words in DISK_FULL_WORDS):
            return True
        current = current.__cause__ or current.__context__
    return False


class KfnlpError(Exception):
    """Base class: the message is complete and meant for the user."""

    exit_code = 1


class ConfigError(KfnlpError):
    """A config file, key or value is wrong.

    ``key`` is the dotted config key the message is about, when there is one, so
    that callers can point at the line of a config file that set it.
    """

    exit_code = 2

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


class InputError(KfnlpError):
    """Input data is missing, empty or malformed."""

    exit_code = 3


class StorageError(KfnlpError):
    """A stored artifact is missing, incomplete or cannot be written."""

    exit_code = 4


class RegistryError(KfnlpError):
    """The model registry refused or failed an operation."""

    exit_code = 5


class PipelineError(KfnlpError):
    """A pipeline stage failed."""

    exit_code = 6


class ScaleOutError(PipelineError):
    """A train stage's multi-node job could not be created, never started, failed or was lost."""


class SubmitError(KfnlpError):
    """The Kubeflow Pipelines API cannot be reached, refused a request, or a run did
    not finish within the time allowed."""

    exit_code = 7


class Preempted(KfnlpError):
    """Training stopped on SIGTERM after saving a checkpoint; running the stage again resumes it."""

    exit_code = 143  # 128 + SIGTERM, what a shell reports for a terminated process
