"""Every error the pipeline raises on purpose. Each message names the file, column, rule or
version that failed and says what the operator can do next."""

from __future__ import annotations

import errno

from pavedml.redact import redact, redact_urls

#: The step contract's exit codes (``python -m pavedml <step>``), read by every runtime:
#: a retry may succeed (a service was down, the disk was full; also Python's own exit code for a bug).
EXIT_RETRY = 1
#: the input or the configuration is wrong: retrying cannot help, the task fails at once.
EXIT_NO_RETRY = 3
#: nothing to do (not a failure): the task is skipped and emits no Asset event.
EXIT_SKIP = 99


class PavedMLError(Exception):
    """Base class. ``reason`` is a short machine-readable code used in summaries and alerts."""

    reason = "error"
    #: EXIT_NO_RETRY (the input is wrong, retrying cannot help: the default), EXIT_RETRY (a service
    #: was down) or EXIT_SKIP (nothing to do, :class:`SkipStep`).
    exit_code = EXIT_NO_RETRY

    def __init__(self, message: str, *, details: dict | None = None):
        message = redact_urls(message)  # a URI with a password never reaches a log, summary or alert
        super().__init__(message)
        self.message = message
        self.details = redact(details or {})


class SkipStep(PavedMLError):
    """Nothing to do (not an error): the step exits EXIT_SKIP and its task is skipped."""

    reason = "skipped"
    exit_code = EXIT_SKIP


class ConfigError(PavedMLError):
    reason = "config_error"


class BatchMissingError(PavedMLError):
    reason = "batch_missing"
    exit_code = EXIT_RETRY


class BatchUnreadableError(PavedMLError):
    reason = "batch_unreadable"


class ValidationFailedError(PavedMLError):
    reason = "validation_failed"


class FeatureCheckError(PavedMLError):
    reason = "feature_check_failed"


class TrainingDataError(PavedMLError):
    reason = "training_data_invalid"


class TrackingUnavailableError(PavedMLError):
    reason = "tracking_unavailable"
    exit_code = EXIT_RETRY


class RegistryError(PavedMLError):
    reason = "registry_error"


class DriftInputError(PavedMLError):
    reason = "drift_input_invalid"


class LakeUnavailableError(PavedMLError):
    """The lake (object storage) could not be read or written; a retry may succeed."""

    reason = "lake_unavailable"
    exit_code = EXIT_RETRY


class LandingUnavailableError(PavedMLError):
    """The landing zone (``PAVEDML_LANDING_URI``, object storage) could not be read; a retry may succeed."""

    reason = "landing_unavailable"
    exit_code = EXIT_RETRY


class StorageError(PavedMLError):
    """The data root (or another local path) could not be written: the disk is full, the quota is
    used up, the mount is read-only or the worker's user may not write there."""

    reason = "storage_error"


class StorageFullError(StorageError):
    """ENOSPC/EDQUOT. Retryable (exit 1): space comes back when retention runs or an operator frees
    it, and the retries' back-off gives them that time; the final failure still alerts."""

    reason = "storage_full"
    exit_code = EXIT_RETRY


class StorageNotWritableError(StorageError):
    """EROFS/EACCES/EPERM. Not retryable (exit 3): a read-only mount or a wrong owner is the
    deployment's configuration, no retry changes it; failing at once alerts at once."""

    reason = "storage_not_writable"


#: errno -> (error class, message, what to do next)
_STORAGE_ERRNOS = {
    errno.ENOSPC: (StorageFullError, "cannot write {target}: no space left on the device",
                   "free space on the volume holding {where} or let retention run; the task retries by itself"),
    errno.EDQUOT: (StorageFullError, "cannot write {target}: disk quota exceeded",
                   "raise the quota or free space on that volume; the task retries by itself"),
    errno.EROFS: (StorageNotWritableError, "cannot write {target}: the file system is read-only",
                  "mount the data root read-write (PAVEDML_DATA_ROOT), then clear the task to rerun it"),
    errno.EACCES: (StorageNotWritableError, "no access to {target}: permission denied",
                   "make {where} writable by the worker's user (ls -ld {where}), then clear the task to rerun it"),
    errno.EPERM: (StorageNotWritableError, "no access to {target}: operation not permitted",
                  "make {where} writable by the worker's user (ls -ld {where}), then clear the task to rerun it"),
}


def storage_error(exc: OSError, default_path: str = "the data root") -> StorageError | None:
    """The :class:`StorageError` for a full, read-only or forbidden path, naming it (a failed
    ``write()`` names no file: then ``default_path``); else None."""
    known = _STORAGE_ERRNOS.get(exc.errno) if exc.errno is not None else None
    if known is None or exc.errno is None:
        return None
    cls, message, next_ = known
    path = str(exc.filename or default_path)
    target = f"{path} -> {exc.filename2}" if exc.filename2 else path
    return cls(f"{message.format(target=target)} ({errno.errorcode.get(exc.errno, exc.errno)})",
               details={"evidence": [f"{type(exc).__name__}: {exc}"], "next": next_.format(where=_existing(path))})


def _existing(path: str) -> str:
    """``path`` or its nearest folder that exists (the one to check or fix)."""
    from pathlib import Path

    here = Path(path)
    if not here.is_absolute():
        return path
    while not here.exists() and here.parent != here:
        here = here.parent
    return str(here)


class SourceUnavailableError(PavedMLError):
    """The database of a SQL batch source (``batches.source``) could not be reached, or the
    connection dropped mid-query; a retry may succeed. The message names the URL, redacted."""

    reason = "source_unavailable"
    exit_code = EXIT_RETRY


class SourceQueryError(PavedMLError):
    """The database refused the batch source's query (an unknown table or column, a syntax error,
    a bad cast): retrying cannot help; the message names the query's first line and the error."""

    reason = "source_query_failed"
