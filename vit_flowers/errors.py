"""Exit codes and the error users can fix themselves.

Every command exits 0 when done, 1 on a failure of the program or the
machine, and 2 when the input is bad (a missing file, a broken list, a
config that does not match its weights, or a bad image under --strict).
"""

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2

EXIT_CODES_HELP = "exit codes: 0 done, 1 failure, 2 bad input"


class BadInputError(Exception):
    """Input the user can fix; the message names the file, row or value."""


class ConfigError(BadInputError):
    """A config.json or run dir that cannot be used as it is."""


class WeightsUnavailableError(BadInputError):
    """Pretrained weights that could not be downloaded or found locally."""
