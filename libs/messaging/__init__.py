"""RabbitMQ through aio-pika: connections, confirmed publishing, consuming, topology, dead letters."""

from libs.messaging.connection import connect
from libs.messaging.consumer import DeadLetterPublisher, Delivery, QueueConsumer
from libs.messaging.publisher import Outgoing, Publisher
from libs.messaging.topology import Binding, QueueSpec, Topology, declare

__all__ = [
    "Binding",
    "DeadLetterPublisher",
    "Delivery",
    "Outgoing",
    "Publisher",
    "QueueConsumer",
    "QueueSpec",
    "Topology",
    "connect",
    "declare",
]
