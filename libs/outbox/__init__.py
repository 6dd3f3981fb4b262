"""The transactional outbox: the unit of work that writes it, and the relay that publishes it."""

from libs.outbox.relay import OutboxRelay, Wakeup
from libs.outbox.store import OutboxWriter
from libs.outbox.unit_of_work import UnitOfWork, unit_of_work

__all__ = ["OutboxRelay", "OutboxWriter", "UnitOfWork", "Wakeup", "unit_of_work"]
