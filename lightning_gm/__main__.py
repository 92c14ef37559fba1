"""``python -m lightning_gm`` runs the ``lightning_gm`` command."""

import sys

from lightning_gm.command import main

if __name__ == "__main__":
    sys.exit(main())
