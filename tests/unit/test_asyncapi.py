"""docs/asyncapi.yaml is generated from the registry: current, complete and self-consistent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from contracts import REGISTRY
from orderflow.asyncapi import render

DOC = Path(__file__).parents[2] / "docs" / "asyncapi.yaml"


def test_the_committed_asyncapi_file_is_what_the_registry_generates() -> None:
    assert DOC.read_text() == render(), (
        "docs/asyncapi.yaml is stale: run `uv run orderflow asyncapi`"
    )


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_every_message_type_has_a_channel_on_its_exchange_and_every_reference_resolves() -> None:
    doc = yaml.safe_load(DOC.read_text())
    assert doc["asyncapi"] == "3.0.0"
    addresses = {c["address"]: c for c in doc["channels"].values()}
    for spec in REGISTRY:
        channel = addresses[spec.type]
        assert channel["bindings"]["amqp"]["exchange"]["name"] == spec.exchange
    for ref in _refs(doc):
        assert _resolve(doc, ref) is not None, ref


def test_place_order_documents_the_contract_fields() -> None:
    doc = yaml.safe_load(DOC.read_text())
    schema = doc["components"]["schemas"]["PlaceOrder"]
    assert set(schema["required"]) == {"customer_id", "items"}
    assert {"order_id", "customer_id", "items", "currency"} <= set(schema["properties"])
    line = doc["components"]["schemas"]["PricedLine"]
    assert line["properties"]["unit_price"]["type"] == "string"
    assert line["properties"]["quantity"]["exclusiveMinimum"] == 0


def test_every_message_type_is_described_in_the_human_contract() -> None:
    text = (DOC.parent / "messages.md").read_text()
    missing = [spec.type for spec in REGISTRY if f"`{spec.type}`" not in text]
    assert missing == []
