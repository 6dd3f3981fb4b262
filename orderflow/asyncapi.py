"""Generate ``docs/asyncapi.yaml`` (AsyncAPI 3.0) from the message registry and the topology.

One channel per message type: its address is the routing key, its AMQP binding names the topic
exchange. Every message is a CloudEvents 1.0 structured JSON body whose ``data`` follows the
type's schema. ``orderflow asyncapi --check`` (run by the tests) fails when the file is stale.
"""

from __future__ import annotations

from typing import Any

import yaml

from contracts import REGISTRY, TOPOLOGY
from libs.messages.registry import MessageSpec


def _camel(type_name: str) -> str:
    context, name, version = type_name.split(".")
    return context + "".join(p.title() for p in name.split("_")) + version.upper()


def _consumers(spec: MessageSpec) -> list[str]:
    out = []
    for queue in TOPOLOGY.queues:
        for b in queue.bindings:
            if b.exchange == spec.exchange and b.routing_key in ("#", spec.type):
                out.append(queue.name)
    return out


def _envelope_schema(spec: MessageSpec) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["specversion", "id", "source", "type", "time", "datacontenttype", "data"],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": {"type": "string", "format": "uuid", "description": "idempotency key"},
            "source": {"type": "string", "examples": ["/orderflow/order_svc"]},
            "type": {"const": spec.type},
            "time": {"type": "string", "format": "date-time"},
            "subject": {"type": "string", "description": "the order id"},
            "datacontenttype": {"const": "application/json"},
            "correlationid": {"type": "string"},
            "causationid": {"type": "string"},
            "traceparent": {"type": "string", "description": "W3C trace context"},
            "tracestate": {"type": "string"},
            "data": {"$ref": f"#/components/schemas/{spec.model.__name__}"},
        },
    }


def document() -> dict[str, Any]:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for spec in REGISTRY:
        key = _camel(spec.type)
        name = spec.model.__name__
        schema = spec.model.model_json_schema(
            mode="serialization", ref_template="#/components/schemas/{model}"
        )
        for def_name, definition in schema.pop("$defs", {}).items():
            schemas[def_name] = definition
        schemas[name] = schema
        messages[name] = {
            "name": name,
            "title": name,
            "summary": (spec.model.__doc__ or "").strip().split("\n")[0]
            or f"{spec.kind[:-1]} {spec.type}",
            "contentType": "application/cloudevents+json",
            "correlationId": {"location": "$message.payload#/correlationid"},
            "headers": {
                "type": "object",
                "properties": {
                    "traceparent": {
                        "type": "string",
                        "description": "W3C trace context of the producer span",
                    },
                    "tracestate": {"type": "string"},
                },
            },
            "payload": _envelope_schema(spec),
            "bindings": {
                "amqp": {
                    "contentEncoding": "utf-8",
                    "messageType": spec.type,
                    "bindingVersion": "0.3.0",
                }
            },
        }
        channels[key] = {
            "address": spec.routing_key,
            "title": f"{spec.exchange} / {spec.routing_key}",
            "description": f"Consumed by: {', '.join(_consumers(spec)) or 'any subscriber'}.",
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": {
                        "name": spec.exchange,
                        "type": "topic",
                        "durable": True,
                        "autoDelete": False,
                        "vhost": "orderflow",
                    },
                    "bindingVersion": "0.3.0",
                }
            },
        }
        operations[key] = {
            "action": "receive" if spec.kind == "commands" else "send",
            "title": ("orderflow receives " if spec.kind == "commands" else "orderflow sends ")
            + name,
            "channel": {"$ref": f"#/channels/{key}"},
            "messages": [{"$ref": f"#/channels/{key}/messages/{name}"}],
            "bindings": {
                "amqp": {
                    "deliveryMode": 2,
                    "mandatory": True,
                    "ack": True,
                    "bindingVersion": "0.3.0",
                }
            },
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "orderflow",
            "version": "1.0.0",
            "description": (
                "Commands go to `<context>.commands`, events come from `<context>.events` (topic "
                "exchanges); the routing key is the message type. Bodies are CloudEvents 1.0 "
                "structured JSON; `id` is the idempotency key. Generated by `orderflow asyncapi`."
            ),
        },
        "defaultContentType": "application/cloudevents+json",
        "servers": {
            "local": {
                "host": "127.0.0.1:5672",
                "protocol": "amqp",
                "pathname": "/orderflow",
                "description": "RabbitMQ, vhost orderflow",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": dict(sorted(schemas.items()))},
    }


def render() -> str:
    header = "# Generated by `orderflow asyncapi` from contracts. Do not edit by hand.\n"
    return header + yaml.safe_dump(document(), sort_keys=False, width=100, allow_unicode=True)
