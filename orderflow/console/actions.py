"""The console's actions (POST): log in and out, retry or compensate a saga, replay, edit and
purge dead letters. Each calls the same operations code as the CLI; each needs an operator's
session (a viewer or a visitor gets 403) and a form with the right CSRF token (checked by the
guard before any handler runs)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from libs.observability.logging import get_logger
from orderflow import dlq, operate
from orderflow.console.access import Session
from orderflow.console.pages import FORM_KEY, SESSION_KEY, ctx, render, see_other
from orderflow.console.reads import is_order_id

__all__ = ["routes"]

routes = web.RouteTableDef()
log = get_logger(__name__)
SESSION_COOKIE = "orderflow_session"


def _operator(request: web.Request) -> Session:
    session = request[SESSION_KEY]
    if session is None:
        raise web.HTTPForbidden(text="actions need an operator's login: log in first")
    if session.role != "operator":
        raise web.HTTPForbidden(text=f"{session.user} is a {session.role}: read-only, no actions")
    return session


def _field(request: web.Request, name: str, *, limit: int = 500, required: bool = True) -> str:
    value = request[FORM_KEY].get(name, "")
    if not isinstance(value, str):
        raise web.HTTPBadRequest(text=f"{name}: text expected")
    value = value.strip()
    if required and not value:
        raise web.HTTPBadRequest(text=f"{name} is required")
    if len(value) > limit:
        raise web.HTTPBadRequest(text=f"{name}: up to {limit} characters")
    return value


@routes.post("/login")
async def login(request: web.Request) -> web.Response:
    c = ctx(request)
    name = _field(request, "user", limit=40, required=False)
    password = request[FORM_KEY].get("password", "")
    session = None
    if isinstance(password, str) and len(password) < 200:  # scrypt off the event loop
        session = await asyncio.to_thread(
            c.access.login, name, password, client=request.remote or ""
        )
    if session is None:
        log.info("console.login_refused", user=name[:40])
        return render(request, "login.html", status=401, failed=True)
    log.info("console.login", user=session.user, role=session.role)
    response = see_other("/")
    response.set_cookie(
        SESSION_COOKIE,
        c.access.cookie(session),
        httponly=True,
        samesite="Strict",
        path="/",
        max_age=int(c.console.session_hours * 3600),
    )
    return response


@routes.post("/logout")
async def logout(request: web.Request) -> web.Response:
    response = see_other("/")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


def _order_id(request: web.Request) -> str:
    order_id = request.match_info["order_id"]
    if not is_order_id(order_id):
        raise web.HTTPBadRequest(text="an order id is a UUID")
    return order_id


async def _saga_action(request: web.Request, kind: str) -> web.Response:
    session = _operator(request)
    order_id = _order_id(request)
    reason = _field(request, "reason")
    settings = ctx(request).settings
    if kind == "retry":
        t = await operate.retry(settings, order_id, operator=session.user, reason=reason)
    else:
        t = await operate.compensate(settings, order_id, operator=session.user, reason=reason)
    log.info("console.saga_action", action=kind, order_id=order_id, user=session.user)
    if not t.accepted:
        why = "; ".join(str(e.detail.get("why", e.event)) for e in t.log)
        return render(
            request,
            "problem.html",
            status=409,
            status_code=409,
            message=f"{kind} refused: {why}",
            back=f"/orders/{order_id}",
        )
    return see_other(f"/orders/{order_id}?done={kind}")


@routes.post("/orders/{order_id}/retry")
async def retry(request: web.Request) -> web.Response:
    return await _saga_action(request, "retry")


@routes.post("/orders/{order_id}/compensate")
async def compensate(request: web.Request) -> web.Response:
    return await _saga_action(request, "compensate")


def _selection(request: web.Request) -> dlq.Selection:
    """Some letters by id, a group ("error class|type"), or all of a queue (or all)."""
    form = request[FORM_KEY]
    ids = [i for i in form.getall("id", []) if isinstance(i, str) and 0 < len(i) <= 200]
    group = _field(request, "group", limit=400, required=False)
    queue = _field(request, "queue", limit=200, required=False) or None
    everything = _field(request, "all", limit=10, required=False) == "yes"
    if not ids and not group and not everything:
        raise web.HTTPBadRequest(text="choose letters, a group, or all of them")
    chosen_group: tuple[str, str] | None = None
    if group:
        error_class, sep, type_name = group.partition("|")
        if not sep:
            raise web.HTTPBadRequest(text="group: error class|type")
        chosen_group = (error_class, type_name)
    return dlq.Selection(ids=frozenset(ids) if ids else None, group=chosen_group, queue=queue)


def _describe(selection: dlq.Selection) -> str:
    if selection.ids is not None:
        return f"{len(selection.ids)} chosen letter(s)"
    if selection.group is not None:
        return f"the group {selection.group[0]} / {selection.group[1]}"
    return f"every letter of {selection.queue}" if selection.queue else "every dead letter"


@routes.post("/letters/replay")
async def replay(request: web.Request) -> web.Response:
    session = _operator(request)
    selection = _selection(request)
    c = ctx(request)
    done = await dlq.replay(c.settings, selection=selection)
    c.reads.forget_letters()
    log.info("console.replay", user=session.user, replayed=done.count, refused=len(done.refused))
    return render(
        request,
        "outcome.html",
        status=200 if not done.refused else 409,
        title="Replayed",
        summary=f"replayed {done.count} of {_describe(selection)}",
        refused=done.refused,
    )


@routes.post("/letters/purge")
async def purge(request: web.Request) -> web.Response:
    session = _operator(request)
    selection = _selection(request)
    form: Any = request[FORM_KEY]
    if form.get("confirm") != "yes":
        return render(
            request,
            "confirm_purge.html",
            what=_describe(selection),
            ids=sorted(selection.ids or ()),
            group="|".join(selection.group) if selection.group else "",
            queue=selection.queue or "",
            everything=form.get("all") == "yes",
        )
    c = ctx(request)
    count = await dlq.purge(c.settings, queue=selection.queue, selection=selection)
    c.reads.forget_letters()
    log.info("console.purge", user=session.user, purged=count)
    return render(
        request,
        "outcome.html",
        title="Purged",
        summary=f"deleted {count} dead letter(s): {_describe(selection)}",
        refused=[],
    )


@routes.post("/letters/{letter_id}/edit")
async def edit(request: web.Request) -> web.Response:
    session = _operator(request)
    letter_id = request.match_info["letter_id"]
    c = ctx(request)
    body = _field(request, "body", limit=c.settings.consumer.max_body_bytes)
    new_id = await dlq.edit_and_replay(c.settings, letter_id, body.encode())
    c.reads.forget_letters()
    log.info("console.edit_and_replay", user=session.user, letter=letter_id, sent=new_id)
    return render(
        request,
        "outcome.html",
        title="Corrected and sent",
        summary=f"sent the corrected letter as message {new_id} (caused by {letter_id}); "
        "the dead letter is gone",
        refused=[],
    )
