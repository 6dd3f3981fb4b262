"""Per-aggregate order through the relay when one row of a batch fails (issue #12).

The publisher is wrapped so that one chosen row fails on its first publish: dropped and nacked,
sent and nacked, or sent with no answer. Before the fix the relay published the whole claimed
batch at once and marked the later rows of the failed row's aggregate published, so consumers
received that aggregate out of order (0, 2, 3, 4, then 1 on retry). Now the relay publishes in
waves of at most one row per aggregate and sends nothing more of an aggregate after its failed
row: consumers see the first copy of every row of an aggregate in outbox order.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import pytest

from libs.messages import codec
from libs.pg.pool import connect
from libs.testing.waiting import wait_until

from .support import (
    FAST_RELAY,
    WATCH,
    FlakyPublisher,
    Noted,
    collect,
    running_relay,
    stack,
    write_events,
)

pytestmark = pytest.mark.integration


def decoded(message: Any) -> tuple[str, int]:
    data = codec.decode(message.body, content_type=message.content_type, max_bytes=10**6).data
    return data["key"], data["seq"]


@pytest.mark.parametrize("mode", ["drop-nack", "send-nack", "send-unknown"])
async def test_a_failed_row_in_the_middle_of_a_batch_does_not_let_later_rows_of_its_aggregate_pass(
    amqp_url: str, pg_dsn: str, mode: str
) -> None:
    keys = ["x", "y", "z"]
    async with stack(amqp_url, pg_dsn) as s:
        conn = await connect(pg_dsn)
        # one transaction, interleaved: x0 y0 z0 x1 y1 z1 ... — one claimed batch
        events = [Noted(key=k, seq=seq) for seq in range(5) for k in keys]
        ids = await write_events(conn, events, notify=False)
        by_id = dict(zip(ids, [(e.key, e.seq) for e in events], strict=True))
        victim = ids[events.index(Noted(key="x", seq=1))]
        flaky = FlakyPublisher(s.publisher, victim, mode)
        s.publisher = flaky  # type: ignore[assignment]
        # sweep 0.3 s: even a relay that waited for the sweep to retry would retry in time
        settings = FAST_RELAY.model_copy(update={"retry_base": 0.05, "sweep_interval": 0.3})
        async with running_relay(s, pg_dsn, settings=settings):
            expected = len(events) + (0 if mode == "drop-nack" else 1)
            got = await collect(s.connection, WATCH, count=expected, timeout=10)
            await wait_until(
                lambda: conn.fetchval("SELECT count(*) = 0 FROM outbox WHERE published_at IS NULL"),
                timeout=5,
            )
        await asyncio.sleep(0.2)
        got += await collect(s.connection, WATCH, count=1, timeout=0.3)  # nothing more
        assert len(got) == expected

        copies: dict[str, list[int]] = defaultdict(list)
        for message in got:
            key, seq = decoded(message)
            copies[key].append(seq)
        first_copies = {k: list(dict.fromkeys(v)) for k, v in copies.items()}
        assert first_copies == {k: [0, 1, 2, 3, 4] for k in keys}, copies
        if mode != "drop-nack":  # x1 went out twice: once failed (but sent), once confirmed
            assert copies["x"] == [0, 1, 1, 2, 3, 4]
        # a wave never carries two rows of one aggregate
        for wave in flaky.waves:
            wave_keys = [by_id[m][0] for m in wave]
            assert len(wave_keys) == len(set(wave_keys)), wave_keys
        attempts = await conn.fetchval(
            "SELECT attempts FROM outbox WHERE message_id = $1::uuid", victim
        )
        assert attempts == (0 if mode == "send-unknown" else 1)
        await conn.close()


async def test_a_batch_without_repeated_aggregates_is_one_pipelined_wave(
    amqp_url: str, pg_dsn: str
) -> None:
    async with stack(amqp_url, pg_dsn) as s:
        conn = await connect(pg_dsn)
        ids = await write_events(conn, [Noted(key=f"k{i}", seq=0) for i in range(20)], notify=False)
        flaky = FlakyPublisher(s.publisher, victim="none", mode="drop-nack")
        s.publisher = flaky  # type: ignore[assignment]
        async with running_relay(s, pg_dsn):
            got = await collect(s.connection, WATCH, count=20, timeout=5)
        assert sorted(m.message_id for m in got) == sorted(ids)
        assert flaky.waves == [ids]  # the confirms of 20 rows: one round trip
        await conn.close()


async def test_a_nacked_row_is_retried_when_its_delay_is_over_not_at_the_next_sweep(
    amqp_url: str, pg_dsn: str
) -> None:
    async with stack(amqp_url, pg_dsn) as s:
        conn = await connect(pg_dsn)
        [a, b] = await write_events(conn, [Noted(key="n", seq=0), Noted(key="n", seq=1)])
        flaky = FlakyPublisher(s.publisher, victim=a, mode="drop-nack")
        s.publisher = flaky  # type: ignore[assignment]
        # the sweep is 60 s: only the relay's own retry timer can publish the row again (its
        # delay is 0.5-1 s: equal jitter on a 1 s ceiling)
        settings = FAST_RELAY.model_copy(update={"retry_base": 1.0, "sweep_interval": 60.0})
        async with running_relay(s, pg_dsn, settings=settings):
            await wait_until(lambda: flaky.failed_once, timeout=5)
            # a wake-up in between (another aggregate's row) must not lose the retry timer
            [other] = await write_events(conn, [Noted(key="m", seq=0)])
            first = await collect(s.connection, WATCH, count=1, timeout=3)
            assert [m.message_id for m in first] == [other]
            rest = await collect(s.connection, WATCH, count=2, timeout=5)
        assert [m.message_id for m in rest] == [a, b]
        assert flaky.waves[0] == [a]  # b was held back behind its failed predecessor
        await conn.close()
