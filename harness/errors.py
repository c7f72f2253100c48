"""Errors the harness raises on bad input. Each message names the bad value, where it came from,
and how to fix it; the command-line entry point prints them without a traceback."""


class HarnessError(Exception):
    """Base class of every error caused by input the user can fix."""


class ConfigError(HarnessError):
    """An option, parameter or config file is invalid."""


class CheckpointError(HarnessError):
    """A checkpoint is missing, unreadable, or does not fit its pair."""


class MergeError(HarnessError):
    """A merge cannot be done or produced an invalid tensor."""


class EvalError(HarnessError):
    """An evaluator failed, or silently produced an invalid result."""


class UsageError(ConfigError):
    """A command-line option is invalid (entry points exit with code 2, as argparse does)."""
