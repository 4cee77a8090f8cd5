"""Entry point of ``python -m scoring`` (absolute imports: ``spark-submit`` runs files, not modules;
``scoring/spark_submit.py`` is the file to give it)."""
import sys

from scoring.cli import main

sys.exit(main())
