"""``python -m orderflow.cli``."""

import sys

from orderflow.cli import app

sys.exit(app())
