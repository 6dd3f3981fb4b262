"""Place an order and follow it with nothing but aio-pika: the wire contract, no orderflow code.

    python examples/place_order_raw.py amqp://guest:guest@127.0.0.1:5672/orderflow alice WIDGET:2
    python examples/place_order_raw.py amqp://guest:guest@127.0.0.1:5672/orderflow alice WIDGET:2:9.99

Items are SKU:QTY (charged the catalog's price) or SKU:QTY:PRICE (the price you were shown: the
order is refused, with the reason, when it is not the catalog's). Prints the order id, then each
event about it on order.events, and exits at CONFIRMED/REJECTED (every order gets one of them).
"""

import asyncio
import json
import sys
import uuid
from datetime import datetime, timezone

import aio_pika


async def main(url: str, customer: str, items: list[str]) -> int:
    connection = await aio_pika.connect_robust(url)
    channel = await connection.channel(publisher_confirms=True)
    # follow first, so no event is missed: a private queue bound to the order events
    events = await channel.declare_queue(exclusive=True, auto_delete=True)
    for kind in ("order_created", "order_confirmed", "order_rejected"):
        await events.bind("order.events", routing_key=f"order.{kind}.v1")

    order_id = str(uuid.uuid4())
    message_id = str(uuid.uuid4())
    lines = []
    for item in items:
        sku, quantity, *price = item.split(":")
        line: dict[str, object] = {"sku": sku, "quantity": int(quantity)}
        if price:  # the price seen; leave it out to be charged the catalog's
            line["unit_price"] = price[0]
        lines.append(line)
    body = {
        "specversion": "1.0",
        "id": message_id,
        "source": "/examples/place_order_raw",
        "type": "order.place_order.v1",
        "time": datetime.now(timezone.utc).isoformat(),
        "subject": order_id,
        "datacontenttype": "application/json",
        "data": {"order_id": order_id, "customer_id": customer, "items": lines, "currency": "USD"},
    }
    exchange = await channel.get_exchange("order.commands", ensure=False)
    await exchange.publish(
        aio_pika.Message(
            json.dumps(body).encode(),
            content_type="application/cloudevents+json",
            message_id=message_id,
            type="order.place_order.v1",
            correlation_id=order_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        routing_key="order.place_order.v1",
        mandatory=True,
    )
    print(f"placed {order_id}", flush=True)

    async with events.iterator() as stream:
        async for delivery in stream:
            await delivery.ack()
            event = json.loads(delivery.body)
            if event["data"].get("order_id") != order_id:
                continue
            print(event["type"], json.dumps(event["data"]), flush=True)
            if event["type"] in ("order.order_confirmed.v1", "order.order_rejected.v1"):
                break
    await connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:])))
