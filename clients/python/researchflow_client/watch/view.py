"""The watcher's picture as rich renderables: pure functions of the state, no I/O, no clock.

Each run is a header line (name, id, status, stages done), one progress bar per stage that has
started (rich's `ProgressBar` in a table, drawn from the state at each refresh), a line for the
stages not started yet, and the run's artifacts and approvals. A `Note` (a stage done, an
artifact, an approval, the outcome) becomes one timestamped line printed above the live area.

Decision: bars are drawn from the state rather than kept as `rich.progress.Progress` tasks:
`Progress` times and rates a task on the watcher's own clock, which is wrong for history
replayed at start, and a pure view is what a recorded `Console` can check.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .state import ApprovalState, Note, NoteKind, RunState, StageState, WatchState

BAR_WIDTH = 30  # at most; narrower on a narrow terminal, so every column keeps its place
NAME_WIDTH = 24  # at most; a longer stage name is cut with …
MAX_FINISHED_RUNS = 3  # on --project: every unfinished run, and this many finished ones

RUN_STYLES = {"created": "dim", "running": "yellow", "completed": "green", "failed": "bold red"}
NOTE_STYLES: dict[NoteKind, str] = {
    "run.started": "yellow",
    "run.completed": "bold green",
    "run.failed": "bold red",
    "stage.completed": "green",
    "stage.failed": "red",
    "artifact.created": "cyan",
    "governance.required": "magenta",
    "approval.granted": "green",
    "approval.denied": "red",
}
APPROVAL_MARKS = {"required": ("⏳ waiting", "magenta"), "granted": ("✓ granted", "green")}


def run_status(run: RunState) -> Text:
    """`● running`, `✓ completed` or `✗ failed: CODE`."""
    style = RUN_STYLES[run.status]
    if run.status == "completed":
        return Text("✓ completed", style=style)
    if run.status == "failed":
        return Text(f"✗ failed: {run.error_code}", style=style)
    return Text(f"● {run.status}", style=style)


def run_header(run: RunState) -> Text:
    header = Text.assemble((run.label, "bold"), " ", (run.run_id, "dim"), "  ", run_status(run))
    total = run.stage_count if run.stage_count is not None else len(run.stages)
    header.append(f"  ·  {run.stages_done}/{total} stages", style="dim")
    if run.duration_ms is not None:
        header.append(f" in {run.duration_ms / 1000:.1f} s", style="dim")
    return header


def _stage_detail(stage: StageState) -> Text:
    if stage.status == "completed":
        took = f" {stage.duration_ms / 1000:.1f} s" if stage.duration_ms is not None else ""
        return Text(f"✓{took}", style="green")
    if stage.status == "failed":
        return Text(f"✗ {stage.error_code}", style="red")
    return Text(stage.status_message or "", style="dim", overflow="ellipsis", no_wrap=True)


def stage_table(run: RunState, width: int = 120) -> Table:
    """One row per started stage; `width` is the console's, in columns."""
    bar_width = max(10, min(BAR_WIDTH, width - 60))
    table = Table.grid(padding=(0, 1))
    table.add_column(justify="right", style="dim", no_wrap=True, min_width=3)  # stage number
    table.add_column(min_width=8, max_width=NAME_WIDTH, no_wrap=True, overflow="ellipsis")
    table.add_column(width=bar_width)
    table.add_column(justify="right", width=4, no_wrap=True)  # percent
    table.add_column(justify="right", style="dim", no_wrap=True)  # items
    table.add_column(no_wrap=True, overflow="ellipsis", ratio=1)
    total = run.stage_count if run.stage_count is not None else len(run.stages)
    for stage in run.ordered_stages():
        colour = {"running": "yellow", "completed": "green", "failed": "red"}[stage.status]
        bar = ProgressBar(
            total=100,
            completed=stage.progress,
            width=bar_width,
            complete_style=colour,
            finished_style=colour,
        )
        items = (
            f"{stage.items_processed or 0}/{stage.items_total}"
            if stage.items_total is not None
            else ""
        )
        table.add_row(
            f"{stage.index + 1}/{total}" if total else str(stage.index + 1),
            stage.name,
            bar,
            f"{stage.progress}%",
            items,
            _stage_detail(stage),
        )
    return table


def _approval(approval: ApprovalState) -> Text:
    mark, style = APPROVAL_MARKS.get(approval.status, ("✗ denied", "red"))
    text = Text.assemble((approval.governance_type, "bold"), " ", (mark, style))
    if approval.decided_by is not None:
        text.append(f" by {approval.decided_by}", style="dim")
    if approval.reason_code is not None:
        text.append(f" ({approval.reason_code})", style="dim")
    return text


def run_view(run: RunState, width: int = 120) -> RenderableType:
    parts: list[RenderableType] = [run_header(run)]
    if run.stages:
        parts.append(Padding(stage_table(run, width - 2), (0, 0, 0, 2)))
    not_started = (run.stage_count or 0) - len(run.stages)
    if not_started > 0 and not run.finished:
        parts.append(Text(f"  … {not_started} more stage(s) not started yet", style="dim"))
    if run.artifacts:
        line = Text("  artifacts: ", style="dim")
        for n, artifact in enumerate(run.artifacts):
            line.append(", " if n else "")
            line.append(artifact.name, style="cyan")
        parts.append(line)
    if run.approvals:
        line = Text("  approvals: ", style="dim")
        for n, approval in enumerate(run.approvals.values()):
            line.append(", " if n else "")
            line.append_text(_approval(approval))
        parts.append(line)
    return Group(*parts)


def shown_runs(state: WatchState) -> list[RunState]:
    """On --project: every unfinished run, and the most recently seen finished ones."""
    finished = [run for run in state.runs.values() if run.finished][-MAX_FINISHED_RUNS:]
    return [run for run in state.runs.values() if not run.finished or run in finished]


def watch_view(
    state: WatchState, run_id: str | None, footer: Text | None = None, width: int = 120
) -> Group:
    """The live area: the followed run (or the project's runs), then `footer`; `width` is the
    console's, in columns."""
    if run_id is not None:
        run = state.run(run_id)
        runs = [run] if run is not None else []
    else:
        runs = shown_runs(state)
    parts: list[RenderableType] = []
    for run in runs:
        if parts:
            parts.append(Text(""))
        parts.append(run_view(run, width))
    if not runs:
        parts.append(Text("waiting for events…", style="dim"))
    if footer is not None:
        parts.append(footer)
    return Group(*parts)


def note_line(note: Note, state: WatchState, *, with_run: bool) -> Text:
    """`12:04:31  artifact report.pdf (report, 120.6 KB)`, prefixed by the run on --project."""
    line = Text(note.at.astimezone().strftime("%H:%M:%S"), style="dim")
    line.append("  ")
    if with_run:
        run = state.run(note.run_id)
        line.append(f"{run.label if run else note.run_id}: ", style="bold")
    line.append(note.text, style=NOTE_STYLES[note.kind])
    return line
