"""Errors the workflow reports to the user as one clear message."""


class DataError(ValueError):
    """Bad input data: the message names the file or folder at fault."""


class ConfigError(ValueError):
    """An impossible configuration: the message names the config key at fault."""
