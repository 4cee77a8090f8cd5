"""Entry point of ``python -m scoring``."""
import sys

from .cli import main

sys.exit(main())
