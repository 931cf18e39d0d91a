"""Errors that reach the user as a clear message and exit code 2, never as a traceback."""


class PlacementLintError(Exception):
    """Base class: the CLI prints `placement-lint: error: <message>` and exits 2."""


class UsageError(PlacementLintError):
    """The user asked for something that cannot be done (missing path, bad flag value)."""


class ConfigError(UsageError):
    """`[tool.placement-lint]` is malformed; the message names the file and the key."""
