"""The nightly run as an Airflow DAG: two BashOperator stages, export then scoring.

Copy into the DAGs folder; the project lives in /srv/recommender with its .venv made by
`make score`. Each stage is retried only when it exits 75 (another run holds the lock); any other
failure fails the task at once: 1 (error) and 2 (usage) need a person, 3 (refused by the model
gate or a run-to-run threshold) a decision (rerun export with --accept-worse to override).
"""
from __future__ import annotations

from datetime import datetime, timedelta

from airflow import DAG
from airflow.exceptions import AirflowException, AirflowFailException
from airflow.operators.bash import BashOperator

PROJECT = "/srv/recommender"
PYTHON = f"{PROJECT}/.venv/bin/python"
METRICS = "/var/lib/node_exporter/textfile"
RETRY_EXIT_CODE = 75
"""EX_TEMPFAIL: the only exit status worth retrying."""


class RecommenderStage(BashOperator):
    """A BashOperator whose failures are final unless the command exited 75."""

    def execute(self, context):
        try:
            return super().execute(context)
        except AirflowException as exc:
            # BashOperator reports "... returned a non-zero exit code <N>."
            if f"exit code {RETRY_EXIT_CODE}" not in str(exc):
                raise AirflowFailException(str(exc)) from exc
            raise


with DAG(
    dag_id="recommender_nightly",
    schedule="30 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 6, "retry_delay": timedelta(minutes=10)},
) as dag:
    export = RecommenderStage(
        task_id="export",
        cwd=PROJECT,
        # --as-of: train on the ratings up to the end of the run's data interval, so a backfill
        # (airflow dags backfill) reproduces each night from today's data.
        bash_command=f"{PYTHON} -m export --as-of '{{{{ data_interval_end.isoformat() }}}}' --keep 7 "
                     f"--log-format json --metrics-file {METRICS}/recjob_export.prom",
    )
    scoring = RecommenderStage(
        task_id="scoring",
        cwd=PROJECT,
        bash_command=f"{PYTHON} -m scoring --keep 7 --max-topn-change 0.5 --log-format json "
                     f"--metrics-file {METRICS}/recjob_scoring.prom",
    )
    export >> scoring
