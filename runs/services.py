"""The one place run state changes (Zulip's `do_*` actions, healthchecks' `Check.ping()`).

Each transition locks the rows it writes, checks the move is legal, saves, and logs its event,
all in one transaction: a refused or rolled-back transition leaves neither a change nor an
event. Most log their event from the `post_save` receivers (runs/signals.py); the hot path,
`report_progress`, changes its row with one conditional `UPDATE … RETURNING` (which bypasses
`post_save`) and sends its event through the broadcaster itself, as Zulip's `do_*` actions
send theirs explicitly. The REST API, the admin and the management commands call these
functions and nothing else.

Locks, and why there is no deadlock by design (PostgreSQL; SQLite's IMMEDIATE transactions
serialise writers and take no row locks):

- A transition locks only the rows it writes, `FOR NO KEY UPDATE` and `of=("self",)`: never
  a joined row, and never the project or a user. The foreign-key checks of other writers take
  `FOR KEY SHARE` on the rows they reference, which `FOR NO KEY UPDATE` does not block.
- Lock order: run → its stages → its artifacts / approvals. Every transition that locks more
  than one row takes them in that order (a stage's run first, even when only the stage
  changes). `report_progress` locks only its stage (its UPDATE) and waits for nothing after.
- Nothing global is held in a caller's transaction: the event log row is inserted without a
  position and without a lock; positions are stamped after commit (events/sequencer.py).

A transient conflict that still happens (deadlock, serialization failure, lock timeout, or
SQLite's "database is locked") is retried here, a bounded number of times with jittered
backoff, when the service's transaction is the outermost one. Nested in a caller's
transaction (or after the last attempt) it raises `ServiceBusy`, which the API answers with
503 and `Retry-After`.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

from django.db import DatabaseError, transaction
from django.utils import timezone

from events import phi
from events.bus import event_bus
from events.schemas import CHECKSUM_RE, ErrorCode, GovernanceType, Priority, ReasonCode
from runs.broadcaster import run_event_broadcaster

from .models import (
    Approval,
    ApprovalStatus,
    Artifact,
    Membership,
    Project,
    Role,
    Run,
    RunStatus,
    Stage,
    StageStatus,
)

User = Any  # django.contrib.auth user instances; kept loose for custom user models

P = ParamSpec("P")
R = TypeVar("R")

# Attempts of a transition whose transaction hit a transient conflict (the first included),
# and the backoff before attempt n+1: uniform in [0, RETRY_BASE_DELAY * 2**n) seconds.
RETRY_ATTEMPTS = 4
RETRY_BASE_DELAY = 0.005
# What a 503 tells the client to wait before trying again, in seconds.
RETRY_AFTER = 1
# PostgreSQL: deadlock_detected, serialization_failure, lock_not_available (lock_timeout).
_TRANSIENT_SQLSTATES = frozenset({"40P01", "40001", "55P03"})


class TransitionError(Exception):
    """An illegal state change (HTTP 409). The message says why, in words a person can act on."""


class ServiceBusy(Exception):
    """A transient database conflict that was not (or could no longer be) retried: HTTP 503
    with `Retry-After`. Nothing was changed; the same call may succeed a moment later."""

    def __init__(self, retry_after: int = RETRY_AFTER) -> None:
        super().__init__("the database is busy with conflicting changes; try again shortly")
        self.retry_after = retry_after


def is_transient(exc: BaseException) -> bool:
    """A conflict a fresh attempt of the same transaction may not meet again."""
    sqlstate = getattr(exc.__cause__, "sqlstate", None) or getattr(exc, "sqlstate", None)
    if sqlstate in _TRANSIENT_SQLSTATES:
        return True
    # SQLite after its busy timeout.
    return "database is locked" in str(exc)


def transition(fn: Callable[P, R]) -> Callable[P, R]:
    """`transaction.atomic`, plus the bounded retry of transient conflicts described above."""
    return _retried(fn, savepoint=True)


def _retrying(fn: Callable[P, R]) -> Callable[P, R]:
    """The same retry for a change that is one statement, atomic by itself: no transaction
    of its own outside a caller's (autocommit), and no savepoint inside one (a failure marks
    the caller's transaction for rollback, as the bus's log write does)."""
    return _retried(fn, savepoint=False)


def _retried(fn: Callable[P, R], *, savepoint: bool) -> Callable[P, R]:
    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        if transaction.get_connection().in_atomic_block:
            # The caller's transaction is aborted as a whole: only the caller can retry it.
            try:
                with transaction.atomic(savepoint=savepoint):
                    return fn(*args, **kwargs)
            except DatabaseError as exc:
                if is_transient(exc):
                    raise ServiceBusy() from exc
                raise
        for attempt in range(1, RETRY_ATTEMPTS + 1):
            try:
                if not savepoint:
                    return fn(*args, **kwargs)
                with transaction.atomic():
                    return fn(*args, **kwargs)
            except (DatabaseError, ServiceBusy) as exc:
                # ServiceBusy here is a nested change's transient conflict: this whole
                # transaction is the one to try again.
                cause = exc.__cause__ if isinstance(exc, ServiceBusy) else exc
                if not isinstance(cause, BaseException) or not is_transient(cause):
                    raise
                if attempt == RETRY_ATTEMPTS:
                    raise ServiceBusy() from cause
            time.sleep(random.uniform(0, RETRY_BASE_DELAY * 2**attempt))
        raise AssertionError("unreachable")

    return run


def _locked_run(run_id: str) -> Run:
    # FOR NO KEY UPDATE of the run row alone (see the module docstring). On SQLite
    # select_for_update() is a no-op: IMMEDIATE transactions already serialise writers, so
    # the read-check-write below is race-free on both.
    return Run.objects.select_for_update(of=("self",), no_key=True).get(pk=run_id)


def _locked_stage(stage_id: str) -> Stage:
    # Lock order: the run (found through the stage, locking only the run row), then the stage.
    run = Run.objects.select_for_update(of=("self",), no_key=True).get(stages__id=stage_id)
    stage = Stage.objects.select_for_update(of=("self",), no_key=True).get(pk=stage_id)
    stage.run = run
    return stage


def _require_choice(value: str, enum: Any, field: str) -> str:
    allowed = {member.value for member in enum}
    if value not in allowed:
        raise ValueError(f"{field}: unknown value (expected one of {', '.join(sorted(allowed))})")
    return value


# --- projects ------------------------------------------------------------------------------


@transition
def create_project(name: str, owner: User) -> Project:
    project = Project(name=name)
    project.save()
    Membership.objects.create(project=project, user=owner, role=Role.OWNER)
    return project


@transition
def set_member(project: Project, user: User, role: str) -> Membership:
    _require_choice(role, Role, "role")
    membership, created = Membership.objects.select_for_update(of=("self",)).get_or_create(
        project=project, user=user, defaults={"role": role}
    )
    if not created and membership.role != role:
        if membership.role == Role.OWNER and not _has_other_owner(project, user):
            raise TransitionError("a project must keep at least one owner")
        membership.role = role
        membership.save(update_fields=["role"])
    return membership


@transition
def remove_member(project: Project, user: User) -> None:
    membership = (
        Membership.objects.select_for_update(of=("self",))
        .filter(project=project, user=user)
        .first()
    )
    if membership is None:
        raise Membership.DoesNotExist("not a member")
    if membership.role == Role.OWNER and not _has_other_owner(project, user):
        raise TransitionError("a project must keep at least one owner")
    membership.delete()


def _has_other_owner(project: Project, user: User) -> bool:
    return Membership.objects.filter(project=project, role=Role.OWNER).exclude(user=user).exists()


# --- runs ----------------------------------------------------------------------------------


@transition
def create_run(
    project: Project,
    name: str,
    stage_names: Sequence[str],
    created_by: User,
    estimated_duration: int | None = None,
) -> Run:
    if estimated_duration is not None and estimated_duration < 0:
        raise ValueError("estimatedDuration: must be >= 0")
    run = Run(
        project=project, name=name, created_by=created_by, estimated_duration=estimated_duration
    )
    # The run.created event is logged from post_save, before the stages exist: tell it how
    # many there will be (they are created in this same transaction).
    run.planned_stage_count = len(stage_names)
    run.save()
    for position, stage_name in enumerate(stage_names):
        Stage(run=run, position=position, name=stage_name).save()
    return run


@transition
def start_run(run_id: str) -> Run:
    run = _locked_run(run_id)
    if run.status != RunStatus.CREATED:
        raise TransitionError(f"run is {run.status}; only a created run can start")
    run.status = RunStatus.RUNNING
    run.started_at = timezone.now()
    run.save()
    return run


@transition
def complete_run(run_id: str) -> Run:
    run = _locked_run(run_id)
    if run.status != RunStatus.RUNNING:
        raise TransitionError(f"run is {run.status}; only a running run can complete")
    unfinished = run.stages.exclude(status=StageStatus.COMPLETED).count()
    if unfinished:
        raise TransitionError(f"{unfinished} stage(s) have not completed; complete or fail them")
    run.status = RunStatus.COMPLETED
    run.finished_at = timezone.now()
    run.save()
    return run


@transition
def fail_run(run_id: str, error_code: str, failed_stage_id: str | None = None) -> Run:
    _require_choice(error_code, ErrorCode, "errorCode")
    run = _locked_run(run_id)
    if run.status not in (RunStatus.CREATED, RunStatus.RUNNING):
        raise TransitionError(f"run is {run.status}; a finished run cannot fail")
    if failed_stage_id is not None and not run.stages.filter(pk=failed_stage_id).exists():
        raise ValueError("failedStageId: not a stage of this run")
    now = timezone.now()
    # A run that fails takes its running stages with it, each with its own stage.failed event.
    for stage in run.stages.select_for_update(of=("self",), no_key=True).filter(
        status=StageStatus.RUNNING
    ):
        stage.run = run
        stage.status = StageStatus.FAILED
        stage.error_code = error_code
        stage.finished_at = now
        stage.save()
        failed_stage_id = failed_stage_id or stage.pk
    if failed_stage_id is None:
        failed_stage_id = (
            run.stages.filter(status=StageStatus.FAILED).values_list("pk", flat=True).first()
        )
    run.status = RunStatus.FAILED
    run.error_code = error_code
    run.finished_at = now
    run.failed_stage_id = failed_stage_id
    run.save()
    return run


# --- stages --------------------------------------------------------------------------------


def _require_running_run(stage: Stage) -> None:
    if stage.run.status != RunStatus.RUNNING:
        raise TransitionError(f"run is {stage.run.status}; its stages move only while it runs")


@transition
def start_stage(stage_id: str) -> Stage:
    stage = _locked_stage(stage_id)
    _require_running_run(stage)
    if stage.status != StageStatus.PENDING:
        raise TransitionError(f"stage is {stage.status}; only a pending stage can start")
    stage.status = StageStatus.RUNNING
    stage.started_at = timezone.now()
    stage.save()
    return stage


# The stage's columns in model order, as `Stage.from_db` takes them.
_STAGE_FIELDS = [f.attname for f in Stage._meta.concrete_fields]
_STAGE_COLUMNS = [str(f.column) for f in Stage._meta.concrete_fields]
# Per backend: the converters the ORM would apply to those columns (SQLite's timestamps come
# back as naive datetimes; PostgreSQL needs none), found once rather than per call.
_STAGE_CONVERTERS: dict[str, list[tuple[int, list[Any]]]] = {}


def _stage_from_row(connection: Any, values: list[Any]) -> Stage:
    converters = _STAGE_CONVERTERS.get(connection.vendor)
    if converters is None:
        converters = []
        for index, field in enumerate(Stage._meta.concrete_fields):
            col = field.get_col(Stage._meta.db_table)
            found = connection.ops.get_db_converters(col) + field.get_db_converters(connection)
            if found:
                converters.append((index, [(fn, col) for fn in found]))
        _STAGE_CONVERTERS[connection.vendor] = converters
    for index, column_converters in converters:
        for fn, col in column_converters:
            values[index] = fn(values[index], col, connection)
    return Stage.from_db(connection.alias, _STAGE_FIELDS, values)


# The hot path in one statement: change the stage if the move is legal and changes something,
# and return it with what its event needs. Positional parameters (see _progress_params).
_PROGRESS_SQL = f"""
UPDATE {Stage._meta.db_table} SET
    progress = %s,
    items_processed = COALESCE(CAST(%s AS bigint), items_processed),
    items_total = COALESCE(CAST(%s AS bigint), items_total),
    status_message = COALESCE(%s, status_message)
WHERE id = %s
  AND status = '{StageStatus.RUNNING.value}'
  AND EXISTS (SELECT 1 FROM {Run._meta.db_table} r
              WHERE r.id = {Stage._meta.db_table}.run_id AND r.status = '{RunStatus.RUNNING.value}')
  AND progress <= %s
  AND (CAST(%s AS bigint) IS NULL OR COALESCE(items_processed, 0) <= %s)
  AND (COALESCE(CAST(%s AS bigint), items_processed) IS NULL
       OR COALESCE(CAST(%s AS bigint), items_total) IS NULL
       OR COALESCE(CAST(%s AS bigint), items_processed)
          <= COALESCE(CAST(%s AS bigint), items_total))
  AND (progress <> %s
       OR (CAST(%s AS bigint) IS NOT NULL AND items_processed IS DISTINCT FROM %s)
       OR (CAST(%s AS bigint) IS NOT NULL AND items_total IS DISTINCT FROM %s)
       OR (%s IS NOT NULL AND status_message <> %s))
RETURNING {", ".join(_STAGE_COLUMNS)},
    (SELECT r.project_id FROM {Run._meta.db_table} r
     WHERE r.id = {Stage._meta.db_table}.run_id) AS run_project_id,
    (SELECT r.name FROM {Run._meta.db_table} r
     WHERE r.id = {Stage._meta.db_table}.run_id) AS run_name
"""  # noqa: S608 (table names and status values are constants)


def _progress_params(
    stage_id: str, progress: int, processed: int | None, total: int | None, message: str | None
) -> list[Any]:
    return [
        *(progress, processed, total, message, stage_id, progress),
        *(processed, processed),
        *(processed, total, processed, total),
        *(progress, processed, processed, total, total, message, message),
    ]


def report_progress(
    stage_id: str,
    progress: int,
    items_processed: int | None = None,
    items_total: int | None = None,
    status_message: str | None = None,
) -> Stage:
    """Stage progress, the most frequent change. A report that changes nothing is accepted
    and logs nothing (as a `save()` of unchanged fields). It bypasses `post_save`, so it
    logs its `stage.progress` event itself, as Zulip's `do_*` actions send theirs.

    The one lock it takes is the UPDATE's row lock on the stage. The run's state is read, not
    locked: a stage can be running only while its run runs (a run that fails takes its running
    stages with it, locking each, so a report racing with it either lands before — and the
    stage then fails — or re-reads the failed stage and is refused).

    On PostgreSQL the change and its log row are one statement (`_lean_progress`): outside a
    caller's transaction, one autocommit round trip and one commit. Anything it cannot decide
    (an illegal or empty report, a stage renamed since this process cached its names) takes
    the general path, which reads the rows and says why.
    """
    if isinstance(progress, bool) or not isinstance(progress, int) or not 0 <= progress <= 100:
        raise ValueError("progress: must be an integer from 0 to 100")
    for field, value in (("itemsProcessed", items_processed), ("itemsTotal", items_total)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0
        ):
            raise ValueError(f"{field}: must be >= 0")
    if transaction.get_connection().vendor == "postgresql":
        stage = _lean_progress_retried(
            stage_id, progress, items_processed, items_total, status_message
        )
        if stage is not None:
            return stage
        _STAGE_NAMES.pop(stage_id, None)  # re-read on the next report, in case it was stale
    return _report_progress(stage_id, progress, items_processed, items_total, status_message)


@transition
def report_progress_many(reports: Iterable[Mapping[str, Any]]) -> list[Stage]:
    """Many progress reports in one transaction: one commit and one stamping for the batch,
    for a worker that reports many items at once. Each report is a mapping with `stageId`,
    `progress` and optionally `itemsProcessed`, `itemsTotal`, `statusMessage`, and is applied
    as `report_progress` applies it, in the given order (their events' positions follow it).
    All or nothing: an illegal or refused report rolls the whole batch back."""
    stages = []
    for index, report in enumerate(reports):
        stage_id = report.get("stageId")
        if not isinstance(stage_id, str):
            raise ValueError(f"reports[{index}].stageId: required")
        stages.append(
            report_progress(
                stage_id,
                report.get("progress"),  # type: ignore[arg-type]  # validated there
                report.get("itemsProcessed"),
                report.get("itemsTotal"),
                report.get("statusMessage"),
            )
        )
    return stages


def _scan_status(run_name: str, stage_name: str, status_message: str | None) -> None:
    """Each label passed the guard alone; a reader sees run name, stage name and status side
    by side, so they are checked together (the event itself carries only the last two, which
    the bus checks together too)."""
    if not status_message:
        return
    categories = phi.scan_texts([run_name, stage_name, status_message])
    if categories:
        raise ValueError(
            "statusMessage: read together with the run and stage names, contains possible "
            f"PHI ({', '.join(categories)}); remove patient identifiers"
        )


# stage id -> (run id, project id, stage name, stage position, run name): what a progress event
# names besides the numbers, none of which changes while a stage runs. Only a hint: the lean
# statement changes the stage only if all of it still holds (a rename makes it match nothing,
# and the general path re-reads). Bounded: cleared when full.
_STAGE_NAMES: dict[str, tuple[str, str, str, int, str]] = {}
_STAGE_NAMES_MAX = 10_000


def _stage_names(stage_id: str) -> tuple[str, str, str, int, str] | None:
    names = _STAGE_NAMES.get(stage_id)
    if names is None:
        found = (
            Stage.objects.filter(pk=stage_id)
            .values_list("run_id", "run__project_id", "name", "position", "run__name")
            .first()
        )
        if found is None:
            return None
        if len(_STAGE_NAMES) >= _STAGE_NAMES_MAX:
            _STAGE_NAMES.clear()
        names = _STAGE_NAMES[stage_id] = found
    return names


_STAGE_TABLE = Stage._meta.db_table
# The lean statement's change: the stage moves if the report is legal, changes something, and
# the names the event will carry are still the stage's and its run's. Parameters: see
# _lean_params. RETURNING the stage's columns (for the Stage it returns) and the three the
# event fills in from the row (a report may omit them; they then keep their stored values,
# which the guard checked when they were written).
_LEAN_PROGRESS_SQL = f"""
UPDATE {_STAGE_TABLE} AS s SET
    progress = %(progress)s,
    items_processed = COALESCE(CAST(%(processed)s AS bigint), s.items_processed),
    items_total = COALESCE(CAST(%(total)s AS bigint), s.items_total),
    status_message = COALESCE(CAST(%(message)s AS varchar), s.status_message)
FROM {Run._meta.db_table} AS r
WHERE s.id = %(stage)s
  AND r.id = s.run_id
  AND r.status = '{RunStatus.RUNNING.value}'
  AND s.status = '{StageStatus.RUNNING.value}'
  AND s.name = %(stage_name)s AND s.position = %(position)s
  AND r.name = %(run_name)s AND r.project_id = %(project)s
  AND s.progress <= %(progress)s
  AND (CAST(%(processed)s AS bigint) IS NULL
       OR COALESCE(s.items_processed, 0) <= %(processed)s)
  AND (COALESCE(CAST(%(processed)s AS bigint), s.items_processed) IS NULL
       OR COALESCE(CAST(%(total)s AS bigint), s.items_total) IS NULL
       OR COALESCE(CAST(%(processed)s AS bigint), s.items_processed)
          <= COALESCE(CAST(%(total)s AS bigint), s.items_total))
  AND (s.progress <> %(progress)s
       OR (CAST(%(processed)s AS bigint) IS NOT NULL
           AND s.items_processed IS DISTINCT FROM %(processed)s)
       OR (CAST(%(total)s AS bigint) IS NOT NULL AND s.items_total IS DISTINCT FROM %(total)s)
       OR (CAST(%(message)s AS varchar) IS NOT NULL AND s.status_message <> %(message)s))
RETURNING {", ".join(f"s.{column}" for column in _STAGE_COLUMNS)},
    s.items_processed AS fill_processed, s.items_total AS fill_total,
    NULLIF(s.status_message, '') AS fill_message
"""  # noqa: S608 (table names and status values are constants)
_LEAN_FILL = (
    ("itemsProcessed", "fill_processed"),
    ("itemsTotal", "fill_total"),
    ("statusMessage", "fill_message"),
)


def _lean_progress(
    stage_id: str,
    progress: int,
    processed: int | None,
    total: int | None,
    message: str | None,
) -> Stage | None:
    """PostgreSQL: the report and its event in one statement; None when it changed nothing
    (the general path then decides why)."""
    names = _stage_names(stage_id)
    if names is None:
        return None
    run_id, project_id, stage_name, position, run_name = names
    _scan_status(run_name, stage_name, message)
    data: dict[str, Any] = {
        "runId": run_id,
        "projectId": project_id,
        "stageId": stage_id,
        "stageName": stage_name,
        "stageIndex": position,
        "progress": progress,
    }
    if message:
        data["statusMessage"] = message
    if processed is not None:
        data["itemsProcessed"] = processed
    if total is not None:
        data["itemsTotal"] = total
    params = {
        "progress": progress,
        "processed": processed,
        "total": total,
        "message": message,
        "stage": stage_id,
        "stage_name": stage_name,
        "position": position,
        "run_name": run_name,
        "project": project_id,
    }
    done = event_bus.publish_with_change(
        _LEAN_PROGRESS_SQL, params, "stage.progress", data, fill=_LEAN_FILL
    )
    if done is None:
        return None
    changed, _record = done
    connection = transaction.get_connection()
    return _stage_from_row(connection, list(changed[: len(_STAGE_COLUMNS)]))


_lean_progress_retried = _retrying(_lean_progress)


@transition
def _report_progress(
    stage_id: str,
    progress: int,
    items_processed: int | None,
    items_total: int | None,
    status_message: str | None,
) -> Stage:
    """The general path: one conditional UPDATE … RETURNING, then the log INSERT."""
    params = _progress_params(stage_id, progress, items_processed, items_total, status_message)
    # A plain cursor and `from_db`, not `Stage.objects.raw()`: raw() resolves columns, model
    # init order and converters per call, a third of the service's own CPU.
    connection = transaction.get_connection()
    with connection.cursor() as cursor:
        cursor.execute(_PROGRESS_SQL, params)
        row = cursor.fetchone()
    if row is None:
        return _refused_progress(stage_id, progress, items_processed, items_total)
    *values, run_project_id, run_name = row
    stage = _stage_from_row(connection, values)
    # Raising here rolls the UPDATE back.
    _scan_status(run_name, stage.name, status_message)
    data: dict[str, Any] = {
        "runId": stage.run_id,
        "projectId": run_project_id,
        "stageId": stage.pk,
        "stageName": stage.name,
        "stageIndex": stage.position,
        "progress": stage.progress,
    }
    if stage.status_message:
        data["statusMessage"] = stage.status_message
    if stage.items_processed is not None:
        data["itemsProcessed"] = stage.items_processed
    if stage.items_total is not None:
        data["itemsTotal"] = stage.items_total
    run_event_broadcaster.broadcast_stage_progress(data)
    return stage


def _refused_progress(
    stage_id: str, progress: int, items_processed: int | None, items_total: int | None
) -> Stage:
    """The failure path only: read why the UPDATE matched nothing, in the order of the rules."""
    stage = Stage.objects.select_related("run").get(pk=stage_id)
    _require_running_run(stage)
    if stage.status != StageStatus.RUNNING:
        raise TransitionError(f"stage is {stage.status}; progress is reported only while running")
    if progress < stage.progress:
        raise TransitionError(f"progress cannot go back (from {stage.progress} to {progress})")
    if items_processed is not None and (stage.items_processed or 0) > items_processed:
        raise TransitionError("itemsProcessed cannot go back")
    total = items_total if items_total is not None else stage.items_total
    processed = items_processed if items_processed is not None else stage.items_processed
    if total is not None and processed is not None and processed > total:
        raise ValueError("itemsProcessed: cannot exceed itemsTotal")
    return stage  # legal, and it changes nothing


@transition
def complete_stage(stage_id: str) -> Stage:
    stage = _locked_stage(stage_id)
    _require_running_run(stage)
    if stage.status != StageStatus.RUNNING:
        raise TransitionError(f"stage is {stage.status}; only a running stage can complete")
    stage.status = StageStatus.COMPLETED
    stage.progress = 100
    if stage.items_total is not None:
        stage.items_processed = stage.items_total
    stage.finished_at = timezone.now()
    stage.save()
    return stage


@transition
def fail_stage(stage_id: str, error_code: str) -> Stage:
    _require_choice(error_code, ErrorCode, "errorCode")
    stage = _locked_stage(stage_id)
    _require_running_run(stage)
    if stage.status not in (StageStatus.PENDING, StageStatus.RUNNING):
        raise TransitionError(f"stage is {stage.status}; a finished stage cannot fail")
    stage.status = StageStatus.FAILED
    stage.error_code = error_code
    stage.finished_at = timezone.now()
    stage.save()
    return stage


# --- artifacts and approvals ---------------------------------------------------------------


@transition
def add_artifact(
    run_id: str,
    *,
    kind: str,
    name: str,
    size_bytes: int,
    content_type: str,
    checksum: str = "",
    stage_id: str | None = None,
) -> Artifact:
    if isinstance(size_bytes, bool) or size_bytes < 0:
        raise ValueError("sizeBytes: must be >= 0")
    if checksum and not CHECKSUM_RE.match(checksum):
        raise ValueError("checksum: must be a digest (algo:hex, or hex of a digest's length)")
    run = _locked_run(run_id)
    if run.status != RunStatus.RUNNING:
        raise TransitionError(f"run is {run.status}; artifacts are added while it runs")
    stage = None
    if stage_id is not None:
        stage = run.stages.filter(pk=stage_id).first()
        if stage is None:
            raise ValueError("stageId: not a stage of this run")
    artifact = Artifact(
        run=run,
        stage=stage,
        kind=kind,
        name=name,
        size_bytes=size_bytes,
        content_type=content_type,
        checksum=checksum,
    )
    artifact.save()
    return artifact


@transition
def request_approval(
    run_id: str, *, governance_type: str, priority: str, assigned_to: Iterable[User] = ()
) -> Approval:
    _require_choice(governance_type, GovernanceType, "governanceType")
    _require_choice(priority, Priority, "priority")
    run = _locked_run(run_id)
    if run.status not in (RunStatus.CREATED, RunStatus.RUNNING):
        raise TransitionError(f"run is {run.status}; a finished run needs no approval")
    approval = Approval(run=run, governance_type=governance_type, priority=priority)
    # governance.required names the assignees; M2M rows can only be written after the save
    # that fires the event, so the model writes them and the receiver reads this list.
    approval.pending_assignees = list(assigned_to)
    approval.save()
    return approval


@transition
def decide_approval(
    approval_id: str, *, granted: bool, decided_by: User, reason_code: str | None = None
) -> Approval:
    if reason_code:
        _require_choice(reason_code, ReasonCode, "reasonCode")
    run_id = Approval.objects.values_list("run_id", flat=True).get(pk=approval_id)
    run = _locked_run(run_id)
    approval = Approval.objects.select_for_update(of=("self",), no_key=True).get(pk=approval_id)
    approval.run = run
    if approval.status != ApprovalStatus.PENDING:
        raise TransitionError(f"approval was already {approval.status}")
    approval.status = ApprovalStatus.GRANTED if granted else ApprovalStatus.DENIED
    approval.decided_by = decided_by
    approval.reason_code = reason_code or ""
    approval.decided_at = timezone.now()
    approval.save()
    return approval


def membership_role(project: Project | str, user: Any) -> str | None:
    """The user's role in the project, or None. Staff are treated as owners everywhere."""
    if not getattr(user, "is_authenticated", False) or not getattr(user, "is_active", False):
        return None
    if getattr(user, "is_staff", False):
        return Role.OWNER
    project_id = project if isinstance(project, str) else project.pk
    return (
        Membership.objects.filter(project_id=project_id, user=user)
        .values_list("role", flat=True)
        .first()
    )
