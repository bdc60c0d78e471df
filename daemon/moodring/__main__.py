"""``python -m moodring``: the ``moodring`` command."""

import sys

from moodring.cli import main

sys.exit(main())
