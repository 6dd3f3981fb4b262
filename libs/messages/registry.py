"""Message types: the mapping type name ↔ pydantic model ↔ exchange and routing key.

A type name is ``<context>.<snake_name>.v<N>`` and is also the routing key. Commands travel on
``<context>.commands``, events on ``<context>.events``. A registry is a plain object, so a test or
another team can build its own; :data:`contracts.REGISTRY` holds orderflow's.

``parse`` turns an envelope into its model or raises :class:`~libs.errors.UnknownMessageType`,
:class:`~libs.errors.UnknownMessageVersion` or :class:`~libs.errors.InvalidMessageData`.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from libs.errors import (
    ConfigurationError,
    InvalidMessageData,
    UnknownMessageType,
    UnknownMessageVersion,
)
from libs.messages.envelope import Envelope, new_message_id, utcnow

TYPE_PATTERN = re.compile(
    r"^(?P<context>[a-z][a-z0-9_]*)\.(?P<name>[a-z][a-z0-9_]*)\.v(?P<version>[1-9][0-9]*)$"
)


class Message(BaseModel):
    """Base of every message model. Subclasses set ``TYPE``; instances are immutable."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)
    TYPE: ClassVar[str]
    KIND: ClassVar[Literal["commands", "events"]]


class Command(Message):
    """Something asked of one context (imperative: ``ProcessPayment``)."""

    KIND: ClassVar[Literal["commands", "events"]] = "commands"


class Event(Message):
    """Something that happened in one context (past tense: ``PaymentCaptured``)."""

    KIND: ClassVar[Literal["commands", "events"]] = "events"


@dataclass(frozen=True, slots=True)
class MessageSpec:
    """Where a message type travels and how it is read."""

    type: str
    model: builtins.type[Message]
    context: str
    name: str
    version: int
    kind: Literal["commands", "events"]

    @property
    def exchange(self) -> str:
        return f"{self.context}.{self.kind}"

    @property
    def routing_key(self) -> str:
        return self.type


def parse_type(type_name: str) -> tuple[str, str, int]:
    """Split ``order.place_order.v1`` into ``("order", "place_order", 1)``."""
    match = TYPE_PATTERN.match(type_name)
    if match is None:
        raise UnknownMessageType(
            f"type {type_name[:120]!r} is not of the form <context>.<snake_name>.v<N>"
        )
    return match["context"], match["name"], int(match["version"])


class MessageRegistry:
    """The message types one program reads and writes."""

    def __init__(self, *models: type[Message]) -> None:
        self._by_type: dict[str, MessageSpec] = {}
        self._by_model: dict[type[Message], MessageSpec] = {}
        self.register(*models)

    def register(self, *models: type[Message]) -> None:
        for model in models:
            type_name = getattr(model, "TYPE", None)
            if not isinstance(type_name, str):
                raise ConfigurationError(f"{model.__name__} has no TYPE")
            try:
                context, name, version = parse_type(type_name)
            except UnknownMessageType as exc:
                raise ConfigurationError(str(exc)) from None
            if type_name in self._by_type and self._by_type[type_name].model is not model:
                raise ConfigurationError(f"type {type_name} is registered twice")
            spec = MessageSpec(type_name, model, context, name, version, model.KIND)
            self._by_type[type_name] = spec
            self._by_model[model] = spec

    def __iter__(self) -> Iterator[MessageSpec]:
        return iter(sorted(self._by_type.values(), key=lambda s: s.type))

    def __contains__(self, type_name: object) -> bool:
        return type_name in self._by_type

    def spec(self, type_name: str) -> MessageSpec:
        """The spec of a type name, or why there is none."""
        try:
            return self._by_type[type_name]
        except KeyError:
            pass
        context, name, version = parse_type(type_name)
        known = sorted(
            s.version for s in self._by_type.values() if (s.context, s.name) == (context, name)
        )
        if known:
            raise UnknownMessageVersion(
                f"type {context}.{name} has no version {version}; known versions: {known}"
            )
        raise UnknownMessageType(f"unknown message type {type_name!r}")

    def spec_of(self, message: Message | type[Message]) -> MessageSpec:
        model = message if isinstance(message, type) else type(message)
        try:
            return self._by_model[model]
        except KeyError:
            raise ConfigurationError(f"{model.__name__} is not registered") from None

    def parse(self, envelope: Envelope) -> Message:
        """The envelope's data as its model."""
        spec = self.spec(envelope.type)
        try:
            return spec.model.model_validate(envelope.data)
        except ValidationError as exc:
            raise InvalidMessageData(_describe(spec.type, exc)) from None

    def envelope(
        self,
        message: Message,
        *,
        source: str,
        subject: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        message_id: str | None = None,
        time: datetime | None = None,
    ) -> Envelope:
        """Wrap a message for the wire (no trace context yet: the outbox adds it)."""
        spec = self.spec_of(message)
        return Envelope(
            id=message_id or new_message_id(),
            source=source,
            type=spec.type,
            time=time or utcnow(),
            data=message.model_dump(mode="json"),
            subject=subject,
            correlationid=correlation_id,
            causationid=causation_id,
        )


def _describe(type_name: str, exc: ValidationError) -> str:
    problems: list[str] = []
    for error in exc.errors()[:5]:
        where = ".".join(_printable(str(p)[:64]) for p in error["loc"]) or "data"
        problems.append(f"{where}: {_printable(error['msg'][:200])}")
    more = exc.error_count() - len(problems)
    suffix = f" (and {more} more)" if more > 0 else ""
    return f"{type_name} data is invalid: " + "; ".join(problems) + suffix


def _printable(text: str) -> str:
    """Text a stranger wrote (a key, a value quoted in a message), safe to store and send on:
    NUL and lone surrogates (which PostgreSQL and UTF-8 refuse) and other control characters
    are escaped."""
    return "".join(
        ch if ch.isprintable() and not 0xD800 <= ord(ch) <= 0xDFFF else f"\\u{ord(ch):04x}"
        for ch in text
    )


def json_schema(spec: MessageSpec) -> dict[str, Any]:
    """The JSON schema of a type's data (for AsyncAPI)."""
    return spec.model.model_json_schema()
