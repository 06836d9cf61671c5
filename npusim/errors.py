"""The one exception type the CLI turns into a one-line message and exit status 2.

Anything a user can get wrong (a config key, a shape, a graph file) raises `NpusimError` with a
message that names the offending field, tensor or op. Everything else is a bug and keeps its traceback.
"""


class NpusimError(Exception):
    """A user-facing error: bad input, an infeasible schedule, a run that cannot finish."""


class ConfigError(NpusimError):
    """A hardware config that does not validate."""


class GraphError(NpusimError):
    """A kernel graph that is malformed or cannot run on the chosen hardware."""


class DeadlockError(NpusimError):
    """A simulation that stopped with ops still waiting."""


class NumericsError(NpusimError):
    """Input data the numerics library refuses (NaN/Inf, overflow-prone shapes)."""
