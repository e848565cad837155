"""Error types: every user-facing failure is one of these, with a message naming the problem."""


class BmodesepError(Exception):
    """Base class of errors that the command-line layer reports without a traceback."""


class ConfigError(BmodesepError):
    """The configuration is invalid: unknown key, wrong type, unknown preset, inconsistent sizes."""


class DataError(BmodesepError):
    """An input file is missing, malformed, of the wrong shape or units, or holds NaN."""
