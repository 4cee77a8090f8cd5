"""Entry point of ``python -m evaluation`` (``make evaluate``)."""
import sys

from .evaluate import main

sys.exit(main())
