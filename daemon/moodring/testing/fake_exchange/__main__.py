"""Run the fake exchange: ``python -m moodring.testing.fake_exchange --help``."""

import sys

from moodring.testing.fake_exchange.cli import main

sys.exit(main())
