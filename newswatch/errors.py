"""The exceptions newswatch raises on purpose."""

__all__ = ["BrokerError", "ConfigError", "ModelNotFound", "NewswatchError"]


class NewswatchError(Exception):
    """Base class: an error the CLI reports as one line, without a traceback."""


class ConfigError(NewswatchError):
    """A bad option, config file or environment value."""


class BrokerError(NewswatchError):
    """The local Kafka broker cannot be started, reached or stopped."""


class ModelNotFound(NewswatchError):
    """No trained model artefact matches the requested version."""
