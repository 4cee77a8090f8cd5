"""Progress lines: one per interval, naming the step, how far it is and for how long it has run."""
from __future__ import annotations

import logging

from contract.progress import Progress


def test_a_line_once_the_interval_has_passed_and_none_before(caplog):
    log = logging.getLogger("test.progress")
    with caplog.at_level(logging.INFO, logger="test.progress"):
        Progress(log, "mf: scoring", 943, "users", every_s=3600).update(500)
        assert not caplog.records
        Progress(log, "mf: scoring", 943, "users", every_s=0).update(500)
    (record,) = caplog.records
    assert record.getMessage().startswith("mf: scoring: 500 of 943 users (53%), ")


def test_spark_jobs_log_their_tasks_done_while_they_run(caplog, monkeypatch):
    import time
    from types import SimpleNamespace

    from scoring import spark_engine

    class Tracker:
        def getJobIdsForGroup(self, group):
            assert group == spark_engine.JOB_GROUP
            return [7]

        def getJobInfo(self, job):
            return SimpleNamespace(stageIds=[1, 2])

        def getStageInfo(self, stage):
            return SimpleNamespace(numCompletedTasks=stage, numTasks=4)

    spark = SimpleNamespace(sparkContext=SimpleNamespace(statusTracker=Tracker))
    monkeypatch.setattr(spark_engine, "EVERY_S", 0.01)
    with caplog.at_level(logging.INFO, logger=spark_engine.log.name):
        with spark_engine._progress_lines(spark):
            time.sleep(0.1)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("spark: ")]
    assert lines and lines[0].startswith("spark: 3 of 8 tasks done, ")
