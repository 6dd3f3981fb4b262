"""Print the docs/reliability.md table from `make chaos` reports: `uv run python
scripts/chaos_table.py var/chaos/*-1.json`. Faults are the ones observed (the report's
``faults``); a kind observed fewer times than attempted is shown as "observed of attempted"."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HEADER = (
    "| scenario | placed | terminal (confirmed / rejected) | lost | charged twice | refunds "
    "| duplicates absorbed | dead letters / bad injected | quiet after healing "
    "| faults observed | invariants |"
)


def row(report: dict[str, Any]) -> str:
    faults = []
    for kind, seen in sorted(report["faults"].items()):
        if ":" in kind:  # per-process detail (kills:payment_svc#2): in the JSON, not the table
            continue
        tried = report["faults_attempted"].get(kind)
        faults.append(f"{kind} {seen}" + (f" of {tried}" if tried and tried != seen else ""))
    quiet = report["time_to_quiesce"]
    return (
        f"| `{report['scenario']}` | {report['placed']} | {report['terminal']} "
        f"({report['confirmed']} / {report['rejected']}) | {len(report['lost'])} "
        f"| {report['charged_twice']} | {report['refunds']} | {report['duplicates_absorbed']} "
        f"| {report['dead_letters']} / {report['bad_messages_injected']} "
        f"| {'not quiet' if quiet is None else f'{quiet:.1f} s'} | {', '.join(faults)} "
        f"| {'✔' if report['ok'] else '✘ ' + '; '.join(report['violations'])[:300]} |"
    )


def main(paths: list[str]) -> None:
    lines = [HEADER, "|" + " --- |" * HEADER.count(" |")]
    lines += [row(json.loads(Path(path).read_text())) for path in paths]
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
