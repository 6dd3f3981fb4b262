"""How a chaos run proves that its faults happened: by their effects, never by the attempts.

A scenario records each fault it attempts in a :class:`FaultLedger`, then looks for the fault's
effect and records it as observed, or as missed with the reason:

- broker restart: the rabbit application's instance (the Erlang pid of ``rabbit_sup``, a new one
  each time the application starts) or the node's OS pid changed, and the application is back;
- dropped broker connections: every connection of the run's vhost listed before is gone after;
- database restart: ``pg_postmaster_start_time()`` moved forward;
- kill: the process was ended by the signal and its pid is gone; restart: a new pid, ready;
- crash at a fault point: the child wrote ``fault.fired point=<name>`` (libs.faults) and exited
  with the code a fault point exits with, as many times as it wrote the marker;
- proxy faults: the proxy counted the connections it carried, reset, blackholed or delayed, and
  the broker and the database see the services' connections coming from the proxy's sockets;
- duplicates: every copy the duplicator injected was absorbed by an inbox, and every duplicate
  an inbox absorbed is one of those copies, a saga's re-send of a command on its deadline (same
  message id, by design), a copy or outbox row whose confirm never came (it may have arrived)
  or a redelivery by the broker: anything else was published twice by nobody's intent;
- replicas: the broker lists consumers of each service's queue on as many connections as the
  service has replicas, the processes said at start which consumer mode they run, and the
  participants logged ``lock.contended`` when two handlers of one order met (libs.pg.locks).

A missed fault, or a scenario that observed none of the faults it exists for, is a violation.
The checks are plain functions of what was seen, so that a unit test can show each one failing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from libs.faults import EXIT_CODE as FAULT_EXIT_CODE
from libs.faults import MARKER as FAULT_MARKER
from orderflow.chaos.probes import (
    BROKER_PROBE,
    BrokerInstance,
    CommandFailed,
    broker_connections,
    broker_instance,
    broker_restart_problem,
    cmd,
    connections_dropped_problem,
    database_clients,
    database_restart_problem,
    parse_broker_instance,
    postmaster_started,
    queue_consumers,
    replica_problems,
)

__all__ = [
    "BROKER_PROBE",
    "BrokerInstance",
    "CommandFailed",
    "FaultLedger",
    "broker_connections",
    "broker_instance",
    "broker_restart_problem",
    "cmd",
    "connections_dropped_problem",
    "consumer_modes",
    "crash_problems",
    "database_clients",
    "database_restart_problem",
    "fired_points",
    "kill_problem",
    "log_records",
    "parse_broker_instance",
    "pid_alive",
    "postmaster_started",
    "proxy_problems",
    "queue_consumers",
    "relay_starts",
    "replica_problems",
    "restart_problem",
    "restart_violations",
    "routing_problems",
]


@dataclass
class FaultLedger:
    """Faults attempted, faults observed (by their effects), and the ones that did not happen."""

    attempted: Counter[str] = field(default_factory=Counter)
    observed: Counter[str] = field(default_factory=Counter)
    missed: list[tuple[str, str]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)  # "<seconds> <what>", in order
    started: float = field(default_factory=time.monotonic)

    def _log(self, text: str) -> None:
        self.log.append(f"{time.monotonic() - self.started:7.2f} {text}")

    def attempt(self, kind: str) -> int:
        """Record an attempt; its number among the attempts of that kind."""
        self.attempted[kind] += 1
        self._log(f"attempt {kind} #{self.attempted[kind]}")
        return self.attempted[kind]

    def saw(self, kind: str, count: int = 1) -> None:
        self.observed[kind] += count
        if kind in self.attempted:
            self._log(f"observed {kind}")

    def miss(self, kind: str, why: str, number: int | None = None) -> None:
        self.missed.append((kind if number is None else f"{kind} #{number}", why))
        self._log(f"missed {self.missed[-1][0]}: {why}")

    def settle(self, kind: str, problem: str | None, number: int | None = None) -> bool:
        """The verdict on attempt ``number`` of ``kind``: observed when its check found no
        ``problem``, missed (with it) otherwise; True when observed."""
        if problem is None:
            self.saw(kind)
            return True
        self.miss(kind, problem, number)
        return False

    def violations(self, required: Iterable[str] = ()) -> list[str]:
        out = [f"fault did not happen: {what}: {why}" for what, why in self.missed]
        missed = Counter(what.partition(" #")[0] for what, _ in self.missed)
        for kind, attempts in sorted(self.attempted.items()):
            seen = self.observed[kind]
            unaccounted = attempts - seen - missed[kind]
            if unaccounted > 0:
                out.append(
                    f"fault {kind}: {attempts} attempted, {seen} observed, {missed[kind]} "
                    f"missed: {unaccounted} neither observed nor explained"
                )
        for kind in required:
            if self.observed[kind] <= 0:
                out.append(
                    f"no {kind} observed ({self.attempted[kind]} attempted): "
                    "the scenario did not inject the fault it is for"
                )
        return out


# -- the broker -----------------------------------------------------------------------------

# One line: the node's OS pid, the pid of the rabbit application's top supervisor (`undefined`
# while the application is stopped) and when the Erlang VM started (unix seconds).


def pid_alive(pid: int) -> bool:
    """Whether a process of that pid exists (a zombie counts as gone: it has ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError), open(f"/proc/{pid}/stat") as stat:
        if stat.read().rpartition(")")[2].split()[0] == "Z":
            return False
    return True


def kill_problem(pid: int, returncode: int | None, sig: int = signal.SIGKILL) -> str | None:
    """None when the process of ``pid`` was ended by ``sig`` and is gone."""
    if pid_alive(pid):
        return f"pid {pid} is still alive"
    if returncode != -sig:
        return f"pid {pid} ended with {returncode}, not by signal {signal.Signals(sig).name}"
    return None


def restart_problem(old_pid: int, new_pid: int | None, *, ready: bool) -> str | None:
    """None when a new process (another pid, alive) took over and said it was ready."""
    if new_pid is None:
        return f"no process was started after pid {old_pid}"
    if new_pid == old_pid:
        return f"the process after the kill has the killed one's pid {old_pid}"
    if not ready:
        return f"the new process (pid {new_pid}) did not become ready"
    if not pid_alive(new_pid):
        return f"the new process (pid {new_pid}) is not alive"
    return None


# -- crashes at fault points ----------------------------------------------------------------

_MARKER_LINE = re.compile(
    rf"^(?P<child>\S+?)\s*\| {re.escape(FAULT_MARKER)} point=(?P<point>[\w.]+)", re.MULTILINE
)


def fired_points(log: str) -> dict[str, Counter[str]]:
    """Per child (the supervisor's prefix), the fault points it said it crashed at."""
    fired: dict[str, Counter[str]] = {}
    for match in _MARKER_LINE.finditer(log):
        fired.setdefault(match["child"], Counter())[match["point"]] += 1
    return fired


def crash_problems(
    fired: Mapping[str, Counter[str]],
    exits: Mapping[str, list[int]],
    *,
    code: int = FAULT_EXIT_CODE,
) -> tuple[Counter[str], list[str]]:
    """Crashes observed per point (markers matched by exits with ``code``), and mismatches."""
    observed: Counter[str] = Counter()
    problems: list[str] = []
    for child in sorted(set(fired) | set(exits)):
        points = fired.get(child, Counter())
        markers = sum(points.values())
        crashed = exits.get(child, []).count(code)
        if markers == crashed:
            observed += points
        elif markers > crashed:
            problems.append(
                f"{child} said it crashed at a fault point {markers} times "
                f"but exited with code {code} only {crashed} times"
            )
        else:
            problems.append(
                f"{child} exited with code {code} {crashed} times "
                f"but said it crashed at a fault point only {markers} times"
            )
    return observed, problems


# -- the proxies ----------------------------------------------------------------------------


def proxy_problems(name: str, *, carried: int, cut: int) -> list[str]:
    """A proxied target must have carried traffic, and the proxy must have cut some of it."""
    problems = []
    if carried <= 0:
        problems.append(f"no traffic went through the {name} proxy (0 connections carried)")
    if cut <= 0:
        problems.append(f"the {name} proxy cut no connection (none reset, none blackholed)")
    return problems


def routing_problems(name: str, seen: Mapping[str, list[int]], proxy_ports: set[int]) -> list[str]:
    """Every service (key of ``seen``) must have a connection to the target, and each of its
    connections must come from one of the proxy's upstream sockets (peer port in
    ``proxy_ports``)."""
    problems = []
    for who, ports in sorted(seen.items()):
        if not ports:
            problems.append(f"{who} has no connection to {name}")
            continue
        direct = sorted(p for p in ports if p not in proxy_ports)
        if direct:
            problems.append(
                f"{who} reaches {name} directly, not through the proxy (peer ports {direct})"
            )
    return problems


# -- duplicates -----------------------------------------------------------------------------


def absorbed_duplicates(
    records: Iterable[Mapping[str, Any]],
) -> tuple[Counter[str], int, Counter[str]]:
    """From the services' log records: per message id, the copies an inbox skipped that the
    broker did not redeliver (``consumer.duplicate``, one record per copy); how many it did
    redeliver (an ack lost with its channel: explained by itself); and per message id, how often
    a relay got no answer for it (``relay.publish_failed``: it is sent again, same id)."""
    absorbed: Counter[str] = Counter()
    redelivered = 0
    republished: Counter[str] = Counter()
    for record in records:
        event = record.get("event")
        if event == "consumer.duplicate" and record.get("redelivered"):
            redelivered += 1
        elif event == "consumer.duplicate":
            absorbed[str(record.get("message_id"))] += 1
        elif event == "relay.publish_failed" and isinstance(
            ids := record.get("unanswered_ids"), list
        ):
            republished.update(map(str, ids))
    return absorbed, redelivered, republished


def unexplained_duplicates(
    absorbed: Counter[str],
    *,
    copied: Iterable[str],
    uncertain: Iterable[str] = (),
    resent: Counter[str] | None = None,
) -> list[str]:
    """The duplicates consumers absorbed (``absorbed``: per message id, how many copies an inbox
    skipped) that nothing explains: not a copy the duplicator injected (``copied``), nor a copy
    whose confirm never came (``uncertain``), nor a saga's re-send of that message
    (``resent``). Each such one was published again by nobody's intent."""
    explained = Counter(copied) + Counter(uncertain) + (resent or Counter())
    return [
        f"message {message_id} was absorbed as a duplicate {count} times but only "
        f"{explained[message_id]} copies of it were injected or re-sent: something published "
        "it again"
        for message_id, count in sorted(absorbed.items())
        if count > explained[message_id]
    ]


# -- replicas -------------------------------------------------------------------------------


_RECORD = re.compile(r"^(?P<child>\S+?)\s*\| (?P<json>\{.*\})$", re.MULTILINE)


def log_records(log: str, event: str) -> list[tuple[str, dict[str, Any]]]:
    """The supervisor-prefixed JSON log records of one event: (child, record) each."""
    found = []
    for match in _RECORD.finditer(log):
        if f'"{event}"' not in match["json"]:
            continue
        with contextlib.suppress(ValueError):
            record = json.loads(match["json"])
            if isinstance(record, dict) and record.get("event") == event:
                found.append((match["child"], record))
    return found


def consumer_modes(log: str) -> Counter[str]:
    """How many starts of consuming processes said they run "one-message mode", "batch mode",
    and "batch mode with several workers" (two or more consumers)."""
    modes: Counter[str] = Counter()
    for _child, record in log_records(log, "service.started"):
        if record.get("relay") == "only" or "batch" not in record:
            continue
        if not record["batch"]:
            modes["one-message mode"] += 1
            continue
        modes["batch mode"] += 1
        if int(record.get("workers", 0)) >= 2:
            modes["batch mode with several workers"] += 1
    return modes


def relay_starts(log: str) -> Counter[str]:
    """Per service, how many relay-only processes said they started."""
    return Counter(
        str(record.get("service"))
        for _child, record in log_records(log, "service.started")
        if record.get("relay") == "only"
    )


def restart_violations(children: Iterable[Any]) -> list[str]:
    """A sentence per supervised process that exited (and was restarted) during a run that
    injects no fault allowed to stop one."""
    return [
        f"{child.name} exited during the run (exit codes {child.exits}) and was restarted "
        f"{child.restarts} time(s): this scenario injects no fault that may stop it"
        for child in children
        if child.exits or child.restarts
    ]
