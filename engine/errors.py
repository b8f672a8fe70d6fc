"""Exceptions raised by the engine. Each keeps its data as attributes and builds its own message."""

from __future__ import annotations


class AvtomatikaError(Exception):
    """Root of every error the engine raises on purpose."""


class BlueprintInvalid(AvtomatikaError):
    """A blueprint failed validation; ``problems`` lists every problem found, not just the first."""

    def __init__(self, blueprint: str, problems: list[str]) -> None:
        self.blueprint = blueprint
        self.problems = problems
        listing = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"Blueprint '{blueprint}' is invalid:\n{listing}")


class ConditionError(AvtomatikaError):
    """A ``.when()`` expression could not be parsed."""

    def __init__(self, expression: str, reason: str, column: int | None = None) -> None:
        self.expression = expression
        self.reason = reason
        self.column = column
        where = f" at column {column}" if column is not None else ""
        super().__init__(f"Invalid condition {expression!r}{where}: {reason}")


class ConditionEvaluationError(AvtomatikaError):
    """A ``.when()`` expression failed on a job's data (e.g. ``"2000" > 1000``)."""

    def __init__(self, expression: str, reason: str) -> None:
        self.expression = expression
        self.reason = reason
        super().__init__(f"Condition {expression!r} could not be evaluated: {reason}")


class HandlerError(AvtomatikaError):
    """A handler broke the rules of a step (several kinds of action, bad arguments, ...)."""

    def __init__(self, blueprint: str, state: str, reason: str) -> None:
        self.blueprint = blueprint
        self.state = state
        self.reason = reason
        super().__init__(f"Blueprint '{blueprint}', state '{state}': {reason}")


class ConditionFailed(HandlerError):
    """Choosing a state's handler failed: a ``.when()`` condition raised; the job is quarantined.

    The message names the blueprint, the state, the handler and the condition, and says why.
    """

    def __init__(self, blueprint: str, state: str, handler: str, expression: str, reason: str) -> None:
        self.handler = handler
        self.expression = expression
        self.condition_reason = reason
        super().__init__(blueprint, state, f"condition {expression!r} of handler {handler} raised {reason}")


class UnknownBlueprint(AvtomatikaError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"Unknown blueprint '{name}'")


class JobNotFound(AvtomatikaError):
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"Job '{job_id}' not found")


class WorkerNotFound(AvtomatikaError):
    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        super().__init__(f"Worker '{worker_id}' is not registered or has expired")


class BreakpointNotFound(AvtomatikaError):
    def __init__(self, breakpoint_id: str) -> None:
        self.breakpoint_id = breakpoint_id
        super().__init__(f"Breakpoint '{breakpoint_id}' not found")


class Refused(AvtomatikaError):
    """A request that cannot be done as asked: ``field`` names what is wrong (the API answers 400 naming it)."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class BreakpointRefused(Refused):
    """A breakpoint that cannot be set."""


class InvalidOperation(AvtomatikaError):
    """An operator or client asked for something the job's status does not allow."""

    def __init__(self, job_id: str, reason: str) -> None:
        self.job_id = job_id
        self.reason = reason
        super().__init__(f"Job '{job_id}': {reason}")


class ResultRejected(AvtomatikaError):
    """A worker result that does not match the task the job waits on (stale, foreign, unknown)."""

    def __init__(self, task_id: str, reason: str, status: int = 409) -> None:
        self.task_id = task_id
        self.reason = reason
        self.status = status
        super().__init__(f"Result for task '{task_id}' rejected: {reason}")


class VersionConflict(AvtomatikaError):
    """A job was changed by someone else between read and write; the caller reloads and retries."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"Job '{job_id}' was modified concurrently")


class ConfigError(AvtomatikaError):
    """A configuration value is invalid; the message names the variable."""


class BulkRefused(Refused):
    """A bulk action that cannot start."""


class BulkNotFound(AvtomatikaError):
    def __init__(self, bulk_id: str) -> None:
        self.bulk_id = bulk_id
        super().__init__(f"Bulk action '{bulk_id}' not found")


class DebuggerError(AvtomatikaError):
    """What the step debugger cannot do now (answer a task when none is waiting, go back to no step...)."""
