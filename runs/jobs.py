"""Job events (the seed's `job-events.ts`) for worker code that executes a stage.

A worker reports its stage's execution; each call is the matching stage transition (so the
database and the event stream can never disagree), which logs the stage event. Data dicts use
the seed's camelCase names; `stageId` identifies the job.

    publish_job_started({"stageId": stage_id})
    publish_job_progress({"stageId": stage_id, "progress": 45, "itemsProcessed": 450,
                          "itemsTotal": 1000, "statusMessage": "Processing 450 of 1000 rows"})
    publish_job_progress_many([{"stageId": a, "progress": 10}, {"stageId": b, "progress": 20}])
    publish_job_completed({"stageId": stage_id})
    publish_job_failed({"stageId": stage_id, "errorCode": "TIMEOUT"})
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from asgiref.sync import sync_to_async

from . import services


def _stage_id(data: Mapping[str, Any]) -> str:
    stage_id = data.get("stageId")
    if not isinstance(stage_id, str):
        raise ValueError("stageId: required")
    return stage_id


def publish_job_started(data: Mapping[str, Any]) -> Any:
    return services.start_stage(_stage_id(data))


def publish_job_progress(data: Mapping[str, Any]) -> Any:
    return services.report_progress(
        _stage_id(data),
        progress=data.get("progress"),  # type: ignore[arg-type]  # validated by the service
        items_processed=data.get("itemsProcessed"),
        items_total=data.get("itemsTotal"),
        status_message=data.get("statusMessage"),
    )


def publish_job_progress_many(items: Iterable[Mapping[str, Any]]) -> Any:
    """Several progress reports (of one stage or many) in one transaction: one commit for the
    lot, events in the given order. All or nothing."""
    return services.report_progress_many(items)


def publish_job_completed(data: Mapping[str, Any]) -> Any:
    return services.complete_stage(_stage_id(data))


def publish_job_failed(data: Mapping[str, Any]) -> Any:
    return services.fail_stage(_stage_id(data), str(data.get("errorCode") or "INTERNAL_ERROR"))


apublish_job_started = sync_to_async(publish_job_started)
apublish_job_progress = sync_to_async(publish_job_progress)
apublish_job_progress_many = sync_to_async(publish_job_progress_many)
apublish_job_completed = sync_to_async(publish_job_completed)
apublish_job_failed = sync_to_async(publish_job_failed)
