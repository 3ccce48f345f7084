"""Errors that are the user's to fix (bad config, bad input files, mismatched artifacts).

The CLI prints them as one ``error: ...`` line and exits non-zero, without a traceback; anything
else is a bug and keeps its traceback."""


class PipelineError(Exception):
    """Bad input: the message names the file, line or config key to fix."""


class ConfigError(PipelineError, ValueError):
    """A configuration problem: unknown key, wrong type, missing key, malformed YAML."""
