"""Logging: one configuration (``LOG_FORMAT``, ``LOG_LEVEL``), job and task fields, and no ``print``."""

from __future__ import annotations

import ast
import io
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.engine import started_engine, wait_for

from avtomatika import Config, StateMachineBlueprint
from avtomatika.models import Job, Task
from avtomatika.observe.logs import PACKAGE_LOGGER, configure_logging, log_fields, make_formatter, reset_logging

ROOT = Path(__file__).resolve().parent.parent
#: The package's source: the engine (``avtomatika``) and the studio (``avtomatika.studio``).
PACKAGE_DIRS = [ROOT / "engine", ROOT / "studio"]


@pytest.fixture(autouse=True)
def package_logger() -> Iterator[logging.Logger]:
    """The ``avtomatika`` logger, put back as it was after the test."""
    logger = logging.getLogger(PACKAGE_LOGGER)
    saved = (logger.level, logger.propagate, list(logger.handlers))
    reset_logging()
    yield logger
    reset_logging()
    logger.setLevel(saved[0])
    logger.propagate = saved[1]
    for handler in saved[2]:
        logger.addHandler(handler)


def configured(log_format: str, level: str = "DEBUG") -> io.StringIO:
    """Configure the package's logging into a buffer, as if the application had configured none."""
    stream = io.StringIO()
    configure_logging(Config(LOG_FORMAT=log_format, LOG_LEVEL=level), stream=stream, force=True)
    return stream


JOB = Job(id="job-1", blueprint="flow", state="resize")
TASK = Task(id="task-1", job_id="job-1", type="echo", state="resize", worker_id="w1")


def test_json_lines_carry_the_job_and_task_as_fields() -> None:
    stream = configured("json")
    logging.getLogger("avtomatika.runtime.results").info("result %s", "accepted", extra=log_fields(JOB, TASK))
    [line] = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["message"] == "result accepted"
    assert record["level"] == "INFO"
    assert record["logger"] == "avtomatika.runtime.results"
    assert record["time"]
    assert {k: record[k] for k in ("job_id", "blueprint", "state", "task_id", "worker_id")} == {
        "job_id": "job-1",
        "blueprint": "flow",
        "state": "resize",
        "task_id": "task-1",
        "worker_id": "w1",
    }


def test_json_lines_survive_values_json_does_not_know() -> None:
    stream = configured("json")
    job_id = uuid.uuid4()
    logging.getLogger("avtomatika.engine").warning("odd", extra={"job_id": job_id})
    assert json.loads(stream.getvalue())["job_id"] == str(job_id)


def test_text_lines_end_with_the_fields_before_any_traceback() -> None:
    stream = configured("text")
    logger = logging.getLogger("avtomatika.runtime.runner")
    logger.info("plain line")
    try:
        raise ValueError("bad input")
    except ValueError:
        logger.exception("handler failed", extra=log_fields(JOB, TASK))
    plain, failed, *traceback = stream.getvalue().splitlines()
    assert plain.endswith("INFO    avtomatika.runtime.runner: plain line")
    assert failed.endswith(
        "ERROR   avtomatika.runtime.runner: handler failed "
        "job_id=job-1 blueprint=flow state=resize task_id=task-1 worker_id=w1"
    )
    assert traceback[0] == "Traceback (most recent call last):"
    assert traceback[-1] == "ValueError: bad input"


def test_log_level_filters_the_package() -> None:
    stream = configured("text", "WARNING")
    logger = logging.getLogger("avtomatika.runtime.scheduler")
    logger.info("hidden")
    logger.warning("shown")
    assert [line.rsplit(": ", 1)[1] for line in stream.getvalue().splitlines()] == ["shown"]


def test_configuring_again_changes_the_one_handler(package_logger: logging.Logger) -> None:
    stream = configured("json")
    configure_logging(Config(LOG_FORMAT="text", LOG_LEVEL="INFO"), stream=stream)
    ours = [h for h in package_logger.handlers if h.get_name() == PACKAGE_LOGGER]
    assert len(ours) == 1
    logging.getLogger("avtomatika.engine").info("now text", extra={"job_id": "j"})
    [line] = stream.getvalue().splitlines()
    assert line.endswith("avtomatika.engine: now text job_id=j")
    assert not package_logger.propagate  # lines are written once, by our handler


def test_the_environment_configures_it(monkeypatch: pytest.MonkeyPatch, package_logger: logging.Logger) -> None:
    monkeypatch.setenv("LOG_FORMAT", "TEXT")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    stream = io.StringIO()
    configure_logging(stream=stream, force=True)
    assert package_logger.level == logging.DEBUG
    logging.getLogger("avtomatika.engine").debug("from the environment", extra={"state": "start"})
    assert stream.getvalue().rstrip().endswith("DEBUG   avtomatika.engine: from the environment state=start")


def test_an_application_that_configured_logging_keeps_the_records(
    caplog: pytest.LogCaptureFixture, package_logger: logging.Logger
) -> None:
    assert logging.getLogger().handlers  # pytest's, as an application's would be
    configure_logging(Config(LOG_FORMAT="json", LOG_LEVEL="INFO"))
    assert not package_logger.handlers
    with caplog.at_level(logging.INFO, logger=PACKAGE_LOGGER):
        logging.getLogger("avtomatika.engine").info("to the application", extra=log_fields(JOB))
    [record] = caplog.records
    assert (record.job_id, record.blueprint, record.state) == ("job-1", "flow", "resize")  # type: ignore[attr-defined]


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        make_formatter("xml")


async def test_the_engine_logs_a_failing_handler_with_its_job(caplog: pytest.LogCaptureFixture) -> None:
    flow = StateMachineBlueprint("failing")

    @flow.handler_for("start", is_start=True)
    async def start(context):
        raise RuntimeError("dependency is down")

    @flow.handler_for("done", is_end=True)
    async def done(context):
        pass

    caplog.set_level(logging.WARNING, logger=PACKAGE_LOGGER)
    async with started_engine(flow) as engine:
        job = await engine.create_job("failing")

        async def logged() -> list[logging.LogRecord]:
            return [r for r in caplog.records if getattr(r, "job_id", None) == job.id]

        [record, *_] = await wait_for(logged, "a log line about the job")
    assert (record.blueprint, record.state) == ("failing", "start")  # type: ignore[attr-defined]
    assert "dependency is down" in record.getMessage()


def print_calls(source: str) -> list[int]:
    """The lines of ``source`` calling ``print`` (or ``builtins.print``)."""
    return sorted(
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Name) and node.func.id == "print")
            or (
                isinstance(node.func, ast.Attribute)
                and node.func.attr == "print"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "builtins"
            )
        )
    )


def test_the_package_never_prints() -> None:
    sources = [path for directory in PACKAGE_DIRS for path in sorted(directory.rglob("*.py"))]
    assert len(sources) > 20  # the scan did find the package
    found = [
        f"{path.relative_to(ROOT)}:{line}" for path in sources for line in print_calls(path.read_text(encoding="utf-8"))
    ]
    assert found == [], "print() in the package; log instead (logging.getLogger(__name__)):\n" + "\n".join(found)


def test_the_print_scan_finds_prints() -> None:
    source = (
        "import builtins\n\ndef f():\n    print('x')\n    builtins.print('y')\n    log.print = 1\n    obj.print()\n"
    )
    assert print_calls(source) == [4, 5]
