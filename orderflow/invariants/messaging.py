"""Inboxes and outboxes: every effect has its inbox record, outboxes are drained."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from libs.messaging.deadletters import DeadLetter
from orderflow.invariants.report import CheckReport, Row, Snapshot


@dataclass(frozen=True)
class Expected:
    """An inbox record an effect implies: the saga's command it came from."""

    message_id: str
    order_id: str
    command: str
    effect: str
    at: datetime | None


def expected_inbox(
    snap: Snapshot, command_id: Callable[[str, str, str], str]
) -> dict[str, list[Expected]]:
    """Per service, the inbox records its effects imply. Saga commands carry ids derived from
    the order and the step (``command_id(order_id, kind, step)``), so each payment, reservation
    and terminal order names the commands it was made by; the handler recorded them in the same
    transaction. Refused orders had no saga: no commands."""
    out: dict[str, list[Expected]] = defaultdict(list)
    # service, saga step, what its rows are, action, compensation, their rows, and which
    # states the action (or the compensation) leaves
    participants = (
        ("payment_svc", "payment", "payment", "ProcessPayment", "RefundPayment", snap.payments,
         {"CAPTURED", "DECLINED", "REFUNDED"}, {"REFUNDED", "CANCELLED"}),
        ("inventory_svc", "inventory", "reservation", "ReserveInventory", "ReleaseInventory",
         snap.reservations, {"RESERVED", "FAILED", "RELEASED"}, {"RELEASED", "CANCELLED"}),
    )  # fmt: skip
    for service, step, noun, action, compensation, rows, by_action, by_compensation in participants:
        for row in rows:
            what = f"{row['status']} {noun}"
            for kind, command, states, at in (
                ("action", action, by_action, "created_at"),
                ("compensation", compensation, by_compensation, "updated_at"),
            ):
                if row["status"] in states:
                    order_id = row["order_id"]
                    expected = Expected(
                        command_id(order_id, kind, step), order_id, command, what, row[at]
                    )
                    out[service].append(expected)
    for o in snap.orders:
        if o["refused"] or o["status"] == "PENDING":
            continue
        kind, step, command = (
            ("action", "approval", "ApproveOrder")
            if o["status"] == "CONFIRMED"
            else ("failure", "failure", "RejectOrder")
        )
        out["order_svc"].append(
            Expected(
                command_id(o["id"], kind, step),
                o["id"],
                command,
                f"{o['status']} order",
                o["updated_at"],
            )
        )
    return out


def inbox(
    report: CheckReport,
    service: str,
    rows: Iterable[Row],
    missing: Iterable[Row],
    handled: set[str],
) -> None:
    """``rows`` (consumer, message_type, n) are recorded by the service's own consumer name
    (replicas share it, or a redelivery to another replica is processed twice) for types the
    service handles; ``missing`` are :class:`Expected` records (as dicts) its inbox lacks."""
    for row in rows:
        if row["consumer"] != service:
            report.violation(
                f"{service} inbox: {row['n']} row(s) of {row['message_type']} recorded by "
                f"consumer {row['consumer']!r}, not {service!r}: its duplicates go unnoticed"
            )
        elif row["message_type"] not in handled:
            report.violation(
                f"{service} inbox: {row['n']} row(s) of type {row['message_type']!r}, which "
                f"{service} does not handle"
            )
    for e in missing:
        report.violation(
            f"order {e['order_id']}: {service}'s inbox has no record of the {e['command']} "
            f"({e['message_id']}) its {e['effect']} came from"
        )


def outboxes(
    report: CheckReport, dbs: Mapping[str, Mapping[str, Sequence[Row]]], *, allow_pending: bool
) -> None:
    """Outboxes drained: nothing unpublished (a few named), nothing dead."""
    backlog: dict[str, int] = {}
    for service, tables in dbs.items():
        [row] = tables["outbox"]
        backlog[service] = row["pending"]
        if row["pending"] and not allow_pending:
            examples = ", ".join(
                f"{r['message_type']} for {r['aggregate_type']} {r['aggregate_id']} "
                f"({r['age']} s old)"
                for r in tables["outbox_pending"]
            )
            report.violation(
                f"{service}: {row['pending']} outbox rows not published, e.g. {examples}"
            )
        if row["dead"]:
            examples = ", ".join(
                f"{r['message_type']} for {r['aggregate_type']} {r['aggregate_id']} "
                f"({(r['last_error'] or '')[:100]})"
                for r in tables["outbox_dead"]
            )
            report.violation(
                f"{service}: {row['dead']} outbox rows dead, e.g. {examples} "
                "(see `orderflow dlq list`)"
            )
    report.figures["outbox_pending"] = backlog


def dead_letter_reasons(letters: Iterable[DeadLetter]) -> str:
    """Why dead letters died, most frequent reason first."""
    counts = Counter(
        f"{letter.type or 'untyped'} ("
        + (
            f"{letter.error_class}: {letter.error[:120]}"
            if letter.error_class or letter.error
            else "no reason recorded"
        )
        + ")"
        for letter in letters
    )
    parts = [f"{n} {reason}" for reason, n in counts.most_common(5)]
    if len(counts) > 5:
        parts.append(f"{len(counts) - 5} other reason(s)")
    return "; ".join(parts)
