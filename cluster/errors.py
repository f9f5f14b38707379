"""The one exception type the project raises for bad input.

Every message says what was expected and what came. The command line turns a
:class:`SpikeGradError` into one error line and a non-zero exit, never a traceback.
"""


class SpikeGradError(ValueError):
    """Bad input: a topology, a case file, a data file, an option or a message."""
