"""The ``refusalkit`` command line (one module per command group)."""
