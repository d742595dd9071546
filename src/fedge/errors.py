"""Every failure fedge reports to a user is one of these exceptions.

Each message says what was wrong and what to do about it. Where a built-in
exception has the same meaning, the fedge exception subclasses it too, so code
that already catches ``ValueError`` or ``TypeError`` keeps working::

    FedgeError
     +-- UnsupportedModelError (TypeError)     no lowering for this estimator / option
     +-- InvalidModelError (ValueError)        an IR model breaks a structural invariant
     +-- InvalidInputError (ValueError)        bad data passed to predict & co.
     +-- NotFittedError (ValueError)           an estimator that was never fitted
     +-- UnsupportedOperationError (AttributeError)
     |                                         e.g. predict_proba on a model without one
     +-- ModelFormatError (ValueError)         not a model file fedge can read
     |    +-- IntegrityError                   a file's bytes were altered or truncated
     +-- UntrustedFileError (PermissionError)  a pickle (or unknown skops type) without trust
     +-- ToolchainError (RuntimeError)         a compiler or emulator is missing or failed
     |    +-- FootprintError                   the model does not fit a target's flash/RAM
     +-- PrivacyBudgetExhausted (RuntimeError) a round would exceed the privacy budget
     +-- SecureAggregationError (RuntimeError) a secure-aggregation round cannot complete
     |                                         (too few survivors, a refused or bad message)
     +-- EncryptionError (RuntimeError)        a homomorphic payload under another key,
                                               tampered, or not decryptable
"""

from __future__ import annotations

__all__ = [
    "EncryptionError",
    "FedgeError",
    "FootprintError",
    "IntegrityError",
    "InvalidInputError",
    "InvalidModelError",
    "ModelFormatError",
    "NotFittedError",
    "PrivacyBudgetExhausted",
    "SecureAggregationError",
    "ToolchainError",
    "UnsupportedModelError",
    "UnsupportedOperationError",
    "UntrustedFileError",
]


class FedgeError(Exception):
    """Base class of every exception fedge raises on purpose."""


class UnsupportedModelError(FedgeError, TypeError):
    """The estimator, or one of its options, has no lowering to the fedge IR."""


class InvalidModelError(FedgeError, ValueError):
    """An IR model breaks a structural invariant (shapes, dtypes, tree structure...)."""


class InvalidInputError(FedgeError, ValueError):
    """Data passed to a model is unusable: wrong shape, non-numeric, NaN or Inf."""


class NotFittedError(FedgeError, ValueError):
    """An estimator was passed before it was fitted."""


class UnsupportedOperationError(FedgeError, AttributeError):
    """The model cannot do what was asked (e.g. ``predict_proba`` on a LinearSVC)."""


class ModelFormatError(FedgeError, ValueError):
    """A file is not a model file fedge can read (unknown format, bad schema, wrong version)."""


class IntegrityError(ModelFormatError):
    """A file's bytes do not match its checksum or signature: it was altered or truncated."""


class UntrustedFileError(FedgeError, PermissionError):
    """Loading would execute code from the file (pickle), and the user did not trust it."""


class ToolchainError(FedgeError, RuntimeError):
    """A compiler, emulator or runtime is missing, failed, or timed out."""


class FootprintError(ToolchainError):
    """The model does not fit the device target's flash or RAM budget (the message gives the
    numbers and what to try: quantize, prune, fewer trees)."""


class PrivacyBudgetExhausted(FedgeError, RuntimeError):  # noqa: N818 (seed API name)
    """Running another round would spend more privacy than the budget allows."""


class SecureAggregationError(FedgeError, RuntimeError):
    """A secure-aggregation round cannot complete: fewer than the threshold of clients
    survive, or a protocol message is malformed, replayed, for another round, or refused."""


class EncryptionError(FedgeError, RuntimeError):
    """A homomorphic-encryption payload cannot be used: made under another key, tampered
    with, or not decryptable by this key holder."""
