"""Errors of the service package (see ``schemas.errors`` for the whole tree)."""

from __future__ import annotations

from typing import ClassVar

from schemas.errors import WeirError


class ServiceError(WeirError):
    """The Kafka runtime, its settings or a broker it manages failed."""


class ConfigError(ServiceError):
    """A settings file or environment variable holds a bad value."""


class BrokerError(ServiceError):
    """A broker that weir starts or reaches could not be started, reached or stopped."""

    retriable: ClassVar[bool] = True


class ProcessError(ServiceError):
    """A child process weir starts could not be started, fed its input or stopped."""


class TopicError(ServiceError):
    """A topic the service needs is missing, or could not be looked up or created."""


class PublishError(ServiceError):
    """A decision or dead letter was not acknowledged; the broker's error is the cause."""


class ModelRefused(ServiceError):
    """A model version failed to load, verify or install; the old one keeps serving."""

    def __init__(self, message: str, path: str, reason: str) -> None:
        super().__init__(message)
        self.path = path
        """The package directory asked for."""
        self.reason = reason
        """Why it was refused (the load error, or the contract change)."""


class SwapBusy(ServiceError):
    """A model version is being loaded already; one load at a time."""
