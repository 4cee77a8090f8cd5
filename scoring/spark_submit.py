"""The file to give ``spark-submit``: it runs the scoring job in the driver, with the Spark engine
as the default (``--engine local`` still scores in the driver alone, if asked for).

    spark-submit --master spark://host:7077 "$(python -m scoring.spark_submit)" \\
        --bundle s3://bucket/artifacts --output-root s3://bucket/recs

``python -m scoring.spark_submit`` outside ``spark-submit`` prints this file's path, for the line
above; the package must be installed in the driver's Python (``PYSPARK_DRIVER_PYTHON``) and in
the executors' (``PYSPARK_PYTHON``).
"""
from __future__ import annotations

import sys
from pathlib import Path

from scoring.spark_options import under_spark_submit


def main(argv: list[str] | None = None) -> int:
    if not under_spark_submit():
        print(Path(__file__).resolve())
        return 0
    from scoring.cli import main as score
    return score(argv)


if __name__ == "__main__":
    sys.exit(main())
