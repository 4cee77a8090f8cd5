"""The one line a failed Spark job ends with, from the task attempts Spark recorded or its message."""
from __future__ import annotations

from scoring.spark_attempts import Attempts, cause, job_failure

PYTHON_FAILURE = """org.apache.spark.api.python.PythonException: Traceback (most recent call last):
  File "/work/scoring/spark_engine.py", line 190, in write_span_parts
    bundle, scorer = _scorer(spec, model)
ValueError: cannot open the bundle

\tat org.apache.spark.api.python.BasePythonRunner$ReaderIterator.handlePythonException(PythonRunner.scala:580)
\t... 21 more"""


def test_the_cause_is_the_python_exception_line_or_the_first_line():
    assert cause(PYTHON_FAILURE) == "ValueError: cannot open the bundle"
    assert cause("org.apache.spark.SparkException: Python worker exited unexpectedly (crashed). Consider setting "
                 "'spark.sql.execution.pyspark.udf.faulthandler.enabled'\n\tat x") == \
        "Python worker exited unexpectedly (crashed)."


def test_the_task_that_failed_most_is_named_with_its_attempts():
    seen = Attempts([(3, 0, "first"), (1, 0, PYTHON_FAILURE), (1, 1, PYTHON_FAILURE)], 0)
    assert str(job_failure(seen, RuntimeError("x"))) == "spark: task 1 failed 2 times: ValueError: cannot open the bundle"
    assert seen.record() == {"failed_task_attempts": 3, "retried_tasks": [1, 3], "lost_executors": 0}


def test_without_recorded_attempts_the_message_is_read():
    message = ("An error occurred while calling o93.collectToPython.\n: org.apache.spark.SparkException: Job aborted "
               "due to stage failure: Task 4 in stage 1.0 failed 4 times, most recent failure: Lost task 4.3 in stage "
               "1.0 (TID 9) (host executor 1): java.lang.OutOfMemoryError: Java heap space\n\tat x")
    assert str(job_failure(Attempts(), RuntimeError(message))) == \
        "spark: task 4 failed 4 times: java.lang.OutOfMemoryError: Java heap space"
