"""``python -m flows.cli``: the ``flows`` command (also what ``torchrun -m flows.cli`` runs)."""

import sys

from flows.cli.main import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
