"""Entry point of ``python -m export``."""
import sys

from .cli import main

sys.exit(main())
