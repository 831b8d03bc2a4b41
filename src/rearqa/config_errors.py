"""The one error type for bad settings, importable from every component's config module."""


class ConfigError(ValueError):
    """A setting has a bad value; the message names the setting and what would be accepted."""
