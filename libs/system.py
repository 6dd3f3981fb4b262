"""A system described once: its services, what each consumes and publishes, where its data is.

The application writes one :class:`SystemSpec` (orderflow's is ``contracts/system.py``);
the broker topology, each service's broker permissions and accepted senders, the operator tools'
list of services, the supervisor, database setup, the test infrastructure and the chaos harness
are all derived from it. Adding a service is adding its package and one :class:`ServiceSpec`.

Conventions that keep an entry short: a service's package is its name (``python -m NAME``,
``NAME.bootstrap.migrations()``), its broker user is ``<prefix>NAME``, and its database DSN is
the setting ``ORDERFLOW_<KEY>_DSN``, the key being the name without ``_svc``. ``name`` is the
system's own: the CloudEvents ``source`` of its services is ``/<system>/<service>``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from libs.messaging.topology import DEAD_LETTER_EXCHANGE, QueueSpec, Topology

__all__ = ["Permissions", "ServiceSpec", "SystemSpec"]


@dataclass(frozen=True)
class Permissions:
    """A broker user's configure / write / read patterns on the system's vhost."""

    configure: str
    write: str
    read: str


def _any_of(names: list[str]) -> str:
    return "^(" + "|".join(re.escape(n) for n in sorted(set(names))) + ")$"


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    queue: QueueSpec
    publishes: tuple[str, ...]
    """The exchanges it publishes to (it is their owner: others' messages there are refused)."""
    tables: tuple[str, ...]
    """Its own tables, children first: what ``setup --reset`` empties besides outbox and inbox."""
    color: str = "37"  # its log prefix's ANSI colour under the supervisor

    @property
    def database_key(self) -> str:
        """Its name without ``_svc``: the ``<key>`` of its ``ORDERFLOW_<KEY>_DSN`` setting."""
        return self.name.removesuffix("_svc")

    @property
    def dsn_env(self) -> str:
        """The environment variable naming its database (``ORDERFLOW_ORDER_DSN``)."""
        return f"ORDERFLOW_{self.database_key.upper()}_DSN"


@dataclass(frozen=True)
class SystemSpec:
    name: str
    services: tuple[ServiceSpec, ...]
    exchanges: tuple[str, ...]
    public_types: frozenset[str] = field(default_factory=frozenset)
    """Message types any broker user may send (the public front door)."""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.services)

    def service(self, name: str) -> ServiceSpec:
        for spec in self.services:
            if spec.name == name:
                return spec
        raise ValueError(f"unknown service {name!r}; expected one of {', '.join(self.names)}")

    @property
    def queues(self) -> dict[str, QueueSpec]:
        return {s.name: s.queue for s in self.services}

    @property
    def topology(self) -> Topology:
        return Topology(exchanges=self.exchanges, queues=tuple(s.queue for s in self.services))

    @property
    def publishes(self) -> dict[str, tuple[str, ...]]:
        return {s.name: s.publishes for s in self.services}

    @property
    def dsn_envs(self) -> dict[str, str]:
        """Service name -> the environment variable naming its database."""
        return {s.name: s.dsn_env for s in self.services}

    # -- trust: who may send what, who may touch what on the broker --------------------------
    def owners(self, exchange: str) -> tuple[str, ...]:
        """The services that publish to an exchange."""
        return tuple(s.name for s in self.services if exchange in s.publishes)

    def allowed_senders(
        self,
        type_name: str,
        exchange: str,
        *,
        user_of: Callable[[str], str],
        operator: str | None,
    ) -> frozenset[str] | None:
        """The broker users a message type is accepted from; None when anyone may send it.

        The users of the services that publish to its exchange, and the operator (whose account
        administers the broker anyway, and replays dead letters).
        """
        if type_name in self.public_types:
            return None
        users = {user_of(service) for service in self.owners(exchange)}
        if operator:
            users.add(operator)
        return frozenset(users)

    def broker_permissions(self, service: str) -> Permissions:
        """Least privilege: a service configures its own queues, its own dead-letter exchange
        and the exchanges it publishes to; writes to those (``queue.bind`` needs write on the
        queue); reads its queues, the exchanges its queue binds from and the dead-letter
        exchanges bound to its dead-letter queue. Nothing else."""
        spec = self.service(service)
        queue = spec.queue
        own = [queue.name, queue.dead_letter_queue, queue.dead_letter_exchange]
        sources = [b.exchange for b in queue.bindings]
        return Permissions(
            configure=_any_of(own + list(spec.publishes)),
            write=_any_of(own + list(spec.publishes)),
            read=_any_of(own + sources + [DEAD_LETTER_EXCHANGE]),
        )
