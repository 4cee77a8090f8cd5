"""What Spark did with a run's tasks: failed attempts, retried tasks, lost executors, and the one
line a failed job ends with.

Read from the driver's status store (the data Spark's UI shows, kept with the UI off too) for
the jobs of one job group, after the listener bus has caught up with the tasks' events.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from contract.errors import SparkJobError

log = logging.getLogger(__name__)

LISTENER_WAIT_MS = 10_000
"""How long to wait for Spark's listener bus to record the last tasks' ends."""
_TASK_FAILED = re.compile(r"Task (\d+) in stage \S+ failed (\d+) times?(?:, most recent failure: Lost task \S+ in "
                          r"stage \S+ \(TID \d+\) \([^)]*\): )?")
_PREFIXES = ("org.apache.spark.api.python.PythonException: ", "org.apache.spark.SparkException: ")


@dataclass
class Attempts:
    """Task attempts of a job group that did not succeed, and executors lost while it ran."""

    failed: list[tuple[int, int, str]] = field(default_factory=list)
    """(task index within its stage, attempt number, error message) of each failed attempt."""
    lost_executors: int | None = 0
    """Executors removed while the application ran (None where Spark did not say)."""

    def record(self) -> dict[str, Any]:
        """The figures for the run's manifest."""
        return {"failed_task_attempts": len(self.failed),
                "retried_tasks": sorted({index for index, _, _ in self.failed}),
                "lost_executors": self.lost_executors}


def attempts(spark: Any, group: str) -> Attempts:
    """The failed task attempts of ``group``'s jobs and the executors lost so far."""
    context = spark.sparkContext
    result = Attempts()
    try:
        context._jsc.sc().listenerBus().waitUntilEmpty(LISTENER_WAIT_MS)
        tracker, store = context.statusTracker(), context._jsc.sc().statusStore()
        for job in tracker.getJobIdsForGroup(group):
            info = tracker.getJobInfo(job)
            for stage in (info.stageIds if info is not None else []):
                stage_info = tracker.getStageInfo(stage)
                if stage_info is None or not stage_info.numFailedTasks:
                    continue
                tasks = store.taskList(stage, stage_info.currentAttemptId, 2**31 - 1)
                for k in range(tasks.size()):
                    task = tasks.apply(k)
                    if task.status() == "FAILED":
                        message = task.errorMessage()
                        result.failed.append((int(task.index()), int(task.attempt()),
                                              message.get() if message.isDefined() else ""))
        executors = store.executorList(False)
        result.lost_executors = sum(1 for k in range(executors.size()) if not executors.apply(k).isActive())
    except Exception as exc:  # noqa: BLE001 - the status store is Spark's internal API; figures are a courtesy
        log.debug("spark: could not read the task attempts (%s)", exc)
        result.lost_executors = None
    return result


def cause(message: str) -> str:
    """The line of a task's error message that says what went wrong: a Python exception's last
    line, else the first line, without Spark's wrapper class names and advice."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if any("Traceback (most recent call last)" in line for line in lines):
        frames = [line for line in lines if not line.startswith(("at ", "..."))]
        python = [line for line in frames if re.match(r"^[\w.]+(Error|Exception|Exit|Interrupt)\b", line)]
        text = python[-1] if python else frames[-1]
    else:
        text = lines[0] if lines else "no error message"
    for prefix in _PREFIXES:
        text = text.removeprefix(prefix)
    return text.split(" Consider setting")[0].strip()[:300]


def job_failure(seen: Attempts, exc: BaseException) -> SparkJobError:
    """The one-line error of a failed job: the task that failed most often, how often, and why."""
    if seen.failed:
        counts: dict[int, int] = {}
        for index, _, _ in seen.failed:
            counts[index] = counts.get(index, 0) + 1
        task = max(counts, key=lambda index: (counts[index], -index))
        message = [m for index, _, m in seen.failed if index == task][-1]
        return SparkJobError(f"spark: task {task} failed {counts[task]} times: {cause(message)}")
    text = str(exc)
    match = _TASK_FAILED.search(text)
    if match:
        return SparkJobError(f"spark: task {match.group(1)} failed {match.group(2)} times: "
                             f"{cause(text[match.end():])}")
    return SparkJobError(f"spark: the job failed: {cause(text)}")
