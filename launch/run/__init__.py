"""The driver and its engines (see :mod:`launch.run.engine` for the protocol between them)."""
