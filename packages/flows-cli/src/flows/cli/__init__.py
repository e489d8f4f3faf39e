"""flows-cli: the ``flows`` command (fit, sample, eval, and listings of what is installed).

Importing this package is cheap: no torch, no numpy; each command imports what it needs.
"""

__version__ = "0.1.0"

__all__: list[str] = []
