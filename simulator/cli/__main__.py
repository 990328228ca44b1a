"""``python -m simulator.cli ...``: the same as the ``dipsim`` command."""
import sys

from . import main

sys.exit(main())
