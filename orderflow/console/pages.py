"""The console's pages (GET): overview, orders, sagas, one order, dead letters, login."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jinja2
from aiohttp import web
from multidict import MultiDictProxy

from libs.pg import Cursor
from libs.settings import Settings
from orderflow import dlq
from orderflow.console.access import Access, Session
from orderflow.console.reads import Reads, is_order_id
from orderflow.console.settings import ConsoleSettings

__all__ = ["CONTEXT", "Context", "problem", "render", "routes", "see_other"]

routes = web.RouteTableDef()
BROWSER_KEY = web.RequestKey("browser", str)
SESSION_KEY: web.RequestKey[Session | None] = web.RequestKey("session", Session)
FORM_KEY: web.RequestKey[MultiDictProxy[Any]] = web.RequestKey("form", MultiDictProxy)
ORDER_STATUSES = ("PENDING", "CONFIRMED", "REJECTED")
SAGA_STATES = ("RUNNING", "COMPENSATING", "COMPLETED", "COMPENSATED")


@dataclass
class Context:
    settings: Settings
    console: ConsoleSettings
    reads: Reads
    env: jinja2.Environment
    access: Access


CONTEXT = web.AppKey("context", Context)


def ctx(request: web.Request) -> Context:
    return request.app[CONTEXT]


def render(
    request: web.Request, template: str, *, status: int = 200, **values: Any
) -> web.Response:
    c = ctx(request)
    session = request.get(SESSION_KEY)
    html = c.env.get_template(template).render(
        me=session,
        csrf=c.access.csrf_token(request[BROWSER_KEY]) if BROWSER_KEY in request else "",
        refresh_ms=int(c.console.refresh * 1000),
        path=request.path,
        **values,
    )
    return web.Response(text=html, content_type="text/html", status=status)


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def problem(request: web.Request, status: int, message: str) -> web.Response:
    return render(request, "problem.html", status=status, status_code=status, message=message)


# -- query parameters: each one checked, a bad one is a 400 that says which --------------------


def _choice(request: web.Request, name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.query.get(name, "").strip()
    if not value:
        return None
    if value.upper() not in allowed:
        raise web.HTTPBadRequest(text=f"{name} must be one of {', '.join(allowed)}")
    return value.upper()


def _text(request: web.Request, name: str, limit: int = 100) -> str | None:
    value = request.query.get(name, "").strip()
    if not value:
        return None
    if len(value) > limit or not value.isprintable():
        raise web.HTTPBadRequest(text=f"{name}: up to {limit} printable characters")
    return value


def _seconds(request: web.Request, name: str) -> float | None:
    value = request.query.get(name, "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name}: a number of seconds") from None
    if not math.isfinite(seconds) or not 0 <= seconds <= 10**8:
        raise web.HTTPBadRequest(text=f"{name}: a number of seconds from 0 to 100,000,000")
    return seconds


def _cursor(request: web.Request) -> Cursor | None:
    token = request.query.get("after", "")
    if not token:
        return None
    try:
        return Cursor.parse(token)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"after: {exc}") from None


def _next_link(request: web.Request, cursor: Cursor | None) -> str | None:
    if cursor is None:
        return None
    query = {k: v for k, v in request.query.items() if k != "after"}
    return str(request.rel_url.with_query({**query, "after": cursor.token()}))


# -- pages ------------------------------------------------------------------------------------


@routes.get("/")
async def overview(request: web.Request) -> web.Response:
    reads = ctx(request).reads
    return render(
        request, "overview.html", ov=await reads.overview(), letters_ttl=reads.letters_ttl
    )


@routes.get("/live/overview")
async def overview_live(request: web.Request) -> web.Response:
    reads = ctx(request).reads
    return render(
        request, "overview_live.html", ov=await reads.overview(), letters_ttl=reads.letters_ttl
    )


@routes.get("/orders")
async def orders(request: web.Request) -> web.Response:
    c = ctx(request)
    rows, cursor = await c.reads.orders(
        status=_choice(request, "status", ORDER_STATUSES),
        customer=_text(request, "customer"),
        older_than=_seconds(request, "older"),
        after=_cursor(request),
        limit=c.console.page_size,
    )
    return render(
        request,
        "orders.html",
        rows=rows,
        next_link=_next_link(request, cursor),
        statuses=ORDER_STATUSES,
        q=request.query,
    )


@routes.get("/sagas")
async def sagas(request: web.Request) -> web.Response:
    c = ctx(request)
    steps = tuple(s.name.upper() for s in c.reads.definition.steps)
    step = _choice(request, "step", steps)
    rows, cursor = await c.reads.sagas(
        state=_choice(request, "state", SAGA_STATES),
        step=step.lower() if step else None,
        customer=_text(request, "customer"),
        older_than=_seconds(request, "older"),
        after=_cursor(request),
        limit=c.console.page_size,
    )
    stuck = [] if request.query.get("after") else await c.reads.stuck(c.console.stuck_after)
    return render(
        request,
        "sagas.html",
        rows=rows,
        stuck=stuck,
        stuck_after=c.console.stuck_after,
        next_link=_next_link(request, cursor),
        states=SAGA_STATES,
        steps=[s.name for s in c.reads.definition.steps],
        q=request.query,
    )


@routes.get("/live/stuck")
async def stuck_live(request: web.Request) -> web.Response:
    c = ctx(request)
    stuck = await c.reads.stuck(c.console.stuck_after)
    return render(request, "stuck.html", stuck=stuck, stuck_after=c.console.stuck_after)


@routes.get("/orders/{order_id}")
async def order(request: web.Request) -> web.Response:
    order_id = request.match_info["order_id"]
    if not is_order_id(order_id):
        raise web.HTTPBadRequest(text="an order id is a UUID")
    page = await ctx(request).reads.order(order_id)
    if page.order is None and page.instance is None:
        raise web.HTTPNotFound(text=f"no order and no saga {order_id}")
    return render(request, "order.html", page=page, done=request.query.get("done"))


@routes.get("/letters")
async def letters(request: web.Request) -> web.Response:
    """Groups (error class and type) with their counts; under each its first letters, or one
    group's letters a page at a time, keyed on the last letter shown (queue order)."""
    c = ctx(request)
    queue = _text(request, "queue", 200)
    group = _text(request, "group", 400)
    after = _text(request, "after", 200)
    # a fresh read takes every letter off the queues for a moment: logged-in users only
    fresh = request.query.get("fresh") == "1" and request[SESSION_KEY] is not None
    read_at, found = await c.reads.letters(queue, fresh=fresh)
    groups = dlq.groups(found)
    shown: list[dlq.Letter] = []
    next_link = None
    if group is not None:
        error_class, _, type_name = group.partition("|")
        members = dict(groups).get((error_class, type_name), [])
        # keyed on the last letter shown and its position: if that letter is gone (replayed),
        # the page goes on from its position, never skipping the rest or looping on an id
        at = _seconds(request, "at")
        start = 0
        if after is not None:
            ids = [x.id for x in members]
            position = int(at or 0)
            if position < len(ids) and ids[position] == after:
                start = position + 1
            elif after in ids[position:]:
                start = ids.index(after, position) + 1
            else:
                start = min(position, len(members))
        shown = members[start : start + c.console.page_size]
        if start + len(shown) < len(members) and shown:
            query = {k: v for k, v in request.query.items() if k not in ("after", "at")}
            next_link = str(
                request.rel_url.with_query(
                    {**query, "after": shown[-1].id, "at": str(start + len(shown) - 1)}
                )
            )
    return render(
        request,
        "letters.html",
        groups=groups,
        total=len(found),
        queue=queue or "",
        group=group,
        shown=shown,
        per_group=10,
        read_at=read_at,
        next_link=next_link,
    )


@routes.get("/letters/{letter_id}")
async def letter(request: web.Request) -> web.Response:
    letter_id = request.match_info["letter_id"]
    reads = ctx(request).reads
    _, cached = await reads.letters()
    found = [x for x in cached if x.id == letter_id]
    if not found and request[SESSION_KEY] is not None:  # newer than what was read
        _, fresh = await reads.letters(fresh=True)
        found = [x for x in fresh if x.id == letter_id]
    if not found:
        raise web.HTTPNotFound(text="no such dead letter (replayed or purged already?)")
    one = found[0]
    body = one.body.decode(errors="replace")
    return render(
        request,
        "letter.html",
        letter=one,
        body=body,
        group=dlq.group_of(one),
        editable=not one.id.startswith("outbox:"),
    )


@routes.get("/favicon.ico")
async def favicon(request: web.Request) -> web.Response:
    return web.Response(status=204)


@routes.get("/login")
async def login_page(request: web.Request) -> web.Response:
    return render(request, "login.html", failed=False)
