"""Every error the pipeline raises on purpose. Each message names the file, column, rule or
version that failed and says what the operator can do next."""

from __future__ import annotations


class PavedMLError(Exception):
    """Base class. ``reason`` is a short machine-readable code used in summaries and alerts."""

    reason = "error"
    #: 1 = may succeed on retry (a service was down); 3 = the input is wrong, retrying cannot help.
    exit_code = 3

    def __init__(self, message: str, *, details: dict | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}


class ConfigError(PavedMLError):
    reason = "config_error"


class BatchMissingError(PavedMLError):
    reason = "batch_missing"
    exit_code = 1


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
    exit_code = 1


class RegistryError(PavedMLError):
    reason = "registry_error"


class DriftInputError(PavedMLError):
    reason = "drift_input_invalid"


class LakeUnavailableError(PavedMLError):
    """The lake (object storage) could not be read or written; a retry may succeed."""

    reason = "lake_unavailable"
    exit_code = 1
