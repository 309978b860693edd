"""Exceptions for user mistakes, which the CLI reports in one line with exit code 2."""


class ModalBalanceError(Exception):
    """Base class for errors caused by user input (configs, data, arguments)."""


class ConfigError(ModalBalanceError, ValueError):
    """An invalid or inconsistent configuration value."""


class DataError(ModalBalanceError):
    """Missing, truncated or malformed data files, or data that violates an assumption."""


class TrainingError(ModalBalanceError):
    """A training run that cannot continue, such as a non-finite embedding."""
