"""Medians across several `bench/run_all.sh` runs (their results.jsonl files).

.venv/bin/python bench/summarise.py var/bench/run1 var/bench/run2 var/bench/run3
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any


def med(values: list[float]) -> float:
    values = [v for v in values if v is not None and v == v]
    return statistics.median(values) if values else float("nan")


def load(dirs: list[str]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for d in dirs:
        path = Path(d) / "results.jsonl"
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            key = rec["bench"]
            if key == "publish" and rec["params"].get("experiment"):
                key = "publish:" + rec["params"]["experiment"]
            if key in ("fanout", "connections"):
                targets = ",".join(sorted(rec["results" if key == "fanout" else "summary"]))
                key = f"{key}[{targets}]"
            out.setdefault(key, []).append(rec)
    return out


def main() -> None:
    runs = load(sys.argv[1:])
    for key, recs in sorted(runs.items()):
        print(f"== {key}  ({len(recs)} run(s))")
        if key.startswith("publish"):
            p50 = med([statistics.median(x["p50_us"] for x in r["single"]) for r in recs])
            p99 = med([statistics.median(x["p99_us"] for x in r["single"]) for r in recs])
            alone = med([r["breakdown_publisher_alone"]["us_per_event"] for r in recs])
            print(
                f"  single {med([r['single_events_per_s'] for r in recs]):,.0f}/s  "
                f"batch {med([r['batch_events_per_s'] for r in recs]):,.0f}/s  "
                f"p50 {p50:.0f} us  p99 {p99:.0f} us  publisher alone {alone:.0f} us/event"
            )
            stages: dict[str, list[float]] = {}
            for r in recs:
                for name, us in r["breakdown"]["stages_us"].items():
                    stages.setdefault(name, []).append(us)
            for name, us in sorted(stages.items(), key=lambda kv: -med(kv[1])):
                print(f"    {med(us):7.1f} us  {name}")
        elif key.startswith("fanout"):
            targets = list(recs[0]["results"])
            bare = med(
                [
                    r["results"]["bare"]["median_delivered_per_s"]
                    for r in recs
                    if "bare" in r["results"]
                ]
            )
            for t in targets:
                rs = [r["results"][t] for r in recs if t in r["results"]]
                dps = med([x["median_delivered_per_s"] for x in rs])
                ratios = [
                    x["results"][t]["median_delivered_per_s"]
                    / x["results"]["bare"]["median_delivered_per_s"]
                    for x in recs
                    if "bare" in x["results"] and t in x["results"]
                ]
                print(
                    f"  {t:10} {dps:9,.0f}/s  ratio/bare {med(ratios):.2f}  p50 "
                    f"{med([x['median_p50_ms'] for x in rs]):7.1f} ms  p99 "
                    f"{med([x['median_p99_ms'] for x in rs]):7.1f} ms  "
                    f"{med([x['median_server_cpu_us_per_delivery'] for x in rs]):5.2f} "
                    "us/delivery  lost "
                    f"{sum(x['lost_total'] for x in rs)}  steady p50 "
                    f"{med([x['steady']['p50_ms'] for x in rs if x['steady']]):6.1f} p99 "
                    f"{med([x['steady']['p99_ms'] for x in rs if x['steady']]):6.1f} ms "
                    f"(cpu {med([x['steady']['server_cpu_pct'] for x in rs if x['steady']]):.0f}%)"
                )
            _ = bare
        elif key.startswith("connections"):
            for t in recs[0]["summary"]:
                rs = [run for r in recs for run in r["runs"][t]]
                print(
                    f"  {t:10} {med([x['kib_per_socket'] for x in rs]):5.1f} KiB/socket  "
                    f"{med([x['accepts_per_s'] for x in rs]):6,.0f} accepts/s  auth "
                    f"{med([x['auth']['authed'] / x['auth']['elapsed_s'] for x in rs]):5,.0f}/s  "
                    "idle CPU "
                    f"{med([x['idle_cpu_pct'] for x in rs]):4.1f}%  ({rs[0]['sockets']} sockets)"
                )
        elif key == "compression":
            for name in ("plain", "deflate"):
                rs = [r[name] for r in recs]
                print(
                    f"  {name:8} {med([x['median_bytes_per_delivery'] for x in rs]):5.0f} "
                    "B/delivery  "
                    f"{med([x['median_cpu_us_per_delivery'] for x in rs]):5.1f} us CPU/delivery  "
                    f"{med([x['median_delivered_per_s'] for x in rs]):8,.0f}/s  "
                    f"{med([x['kib_per_socket'] for x in rs]):5.1f} KiB/socket"
                )
            print(
                f"  ratios deflate/plain: bytes {med([r['bytes_ratio'] for r in recs]):.2f}, "
                f"CPU {med([r['cpu_ratio'] for r in recs]):.2f}"
            )


if __name__ == "__main__":
    main()
