"""The PHI guard's cost per scan (events/phi/): the scan runs on every event's free-text fields
on the publish path, so a short clean text must stay in the low tens of microseconds.

Cases: ``scan_text`` of short clean texts (a stage name, a progress message), of a long clean
text (a 200-character status message, the schema's bound), of PHI texts (which run more
detectors), of Unicode clean text (the fold's slow path); and ``scan`` of a whole progress
payload and of every payload of the clean corpus. Each case is timed in rounds of a fixed
number of calls; the figure is the median per-call time over the rounds.

    .venv/bin/python bench/phi.py                       # this checkout, ~20 s
    .venv/bin/python bench/phi.py --tree /tmp/base      # another checkout's guard (before/after)

``--tree`` points at a directory holding an ``events/phi`` package (for instance the base
commit, extracted with ``git archive <commit> events | tar -x -C /tmp/base``), so that both
sides are measured in one session with the same script. No network; bounded in count and time.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, emit_json, machine_info

CORPUS = ROOT / "tests" / "phi_corpus"

SHORT_CLEAN = [
    "Ingest",
    "QC pass 2",
    "Processing 450 of 1000 rows",
    "Data Ingestion",
    "Model v1.2.3 trained",
    "Retrying in 30s (attempt 2/5)",
]
LONG_CLEAN = (
    "Stage 4 of 7: normalising 12,345 of 50,000 encounter records from batch 2026-01 "
    "(shard 3/8), model v2.4.1, AUC 0.842 (95% CI 0.81-0.87), retry 2/5 after a timeout "
    "of 30s; next: QC pass 2"
)
PHI = [
    "SSN 219-09-9999",
    "MRN: A-99812 re-run",
    "Patient Zoltan Varga enrolled",
    "DOB 03/14/1950",
    "jane.doe@example.org notified",
]
UNICODE_CLEAN = ["Caf\u00e9 batch \u2013 r\u00e9sum\u00e9", "\u6570\u636e\u6e05\u6d17 \U0001f680"]
PAYLOAD = {
    "runId": "run_3f9a0c1d2e4b5a6978c1",
    "projectId": "prj_0a1b2c3d4e5f60718293",
    "stageId": "stg_0a1b2c3d4e5f60718293",
    "stageName": "Data Ingestion",
    "stageIndex": 0,
    "progress": 45,
    "statusMessage": "Processing 450 of 1000 rows",
    "itemsProcessed": 450,
    "itemsTotal": 1000,
}


def _median_us(call: Callable[[], object], per_round: int, rounds: int) -> float:
    """Median over ``rounds`` of the mean time of one call, in microseconds."""
    call()  # warm: compiled patterns, lazily built tables
    samples = []
    for _ in range(rounds):
        gc.disable()
        start = time.perf_counter_ns()
        for _ in range(per_round):
            call()
        elapsed = time.perf_counter_ns() - start
        gc.enable()
        samples.append(elapsed / per_round / 1000)
    return statistics.median(samples)


def _texts_caller(scan_text: Callable[[str], list[str]], texts: list[str]) -> Callable[[], None]:
    def call() -> None:
        for text in texts:
            scan_text(text)

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, help="a checkout whose events/phi to measure")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=2000, help="calls per round (texts)")
    args = parser.parse_args()
    rounds = max(3, min(args.rounds, 101))
    calls = max(100, min(args.calls, 20_000))
    if args.tree is not None:
        sys.path.insert(0, str(args.tree.resolve()))
    phi: Any = importlib.import_module("events.phi")
    where = str(Path(phi.__file__).resolve().parent)

    clean_payloads = [
        json.loads(line)["payload"]
        for line in (CORPUS / "clean.jsonl").read_text(encoding="utf-8").splitlines()
        if line
    ]

    def corpus() -> None:
        for payload in clean_payloads:
            phi.scan(payload)

    # The scanner remembers strings it found clean (events/phi/scanner.py): every case but
    # the last starts each call with an empty memo, so it measures a first sight; the last
    # measures a progress payload seen before, as a stage's repeated reports are.
    scanner = importlib.import_module("events.phi.scanner")
    memos = [
        getattr(scanner, name) for name in ("_CLEAN", "_CLEAN_GROUPS") if hasattr(scanner, name)
    ]

    def fresh(call: Callable[[], object]) -> Callable[[], object]:
        if not memos:
            return call

        def first_sight() -> object:
            for memo in memos:
                memo.clear()
            return call()

        return first_sight

    cases: dict[str, tuple[Callable[[], object], int]] = {
        "clean_short": (fresh(_texts_caller(phi.scan_text, SHORT_CLEAN)), len(SHORT_CLEAN)),
        "clean_long": (fresh(_texts_caller(phi.scan_text, [LONG_CLEAN])), 1),
        "phi_text": (fresh(_texts_caller(phi.scan_text, PHI)), len(PHI)),
        "unicode_clean": (
            fresh(_texts_caller(phi.scan_text, UNICODE_CLEAN)),
            len(UNICODE_CLEAN),
        ),
        "progress_payload": (fresh(lambda: phi.scan(PAYLOAD)), 1),
        "clean_corpus_payload": (fresh(corpus), len(clean_payloads)),
        "progress_payload_seen": (lambda: phi.scan(PAYLOAD), 1),
    }
    results: dict[str, float] = {}
    deadline = time.monotonic() + 120
    for name, (call, per_call) in cases.items():
        per_round = max(1, calls // per_call) if name != "clean_corpus_payload" else 3
        results[name] = round(_median_us(call, per_round, rounds) / per_call, 2)
        print(f"{name:>22}: {results[name]:8.2f} us per scan", flush=True)
        if time.monotonic() > deadline:
            print("time bound reached; later cases skipped", flush=True)
            break
    emit_json("phi", {"guard": where, "rounds": rounds, "us_per_scan": results} | machine_info())


if __name__ == "__main__":
    main()
