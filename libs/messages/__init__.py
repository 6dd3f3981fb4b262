"""Messages: typed commands and events, their registry, and the CloudEvents envelope and codec."""

from libs.messages import codec
from libs.messages.envelope import CONTENT_TYPE, Envelope, new_message_id
from libs.messages.registry import Command, Event, Message, MessageRegistry, MessageSpec

__all__ = [
    "CONTENT_TYPE",
    "Command",
    "Envelope",
    "Event",
    "Message",
    "MessageRegistry",
    "MessageSpec",
    "codec",
    "new_message_id",
]
