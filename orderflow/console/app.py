"""`orderflow console`: the web console's application, its guard and its server.

Pages are rendered on the server (aiohttp + Jinja2, autoescaped); the only script is
``static/console.js``, which refreshes the parts of a page marked ``data-live``. The guard runs
before every handler: it gives each browser a random cookie that CSRF tokens are bound to,
reads the session, refuses a POST without the right token (or from another origin), and sets
headers that keep the pages out of frames and scripts from anywhere else.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import jinja2
from aiohttp import web

from libs.errors import OrderflowError
from libs.observability.logging import get_logger
from libs.settings import Settings
from orderflow.console import actions, pages
from orderflow.console.access import Access
from orderflow.console.reads import Reads
from orderflow.console.settings import ConsoleSettings

__all__ = ["create_app", "serve"]

log = get_logger(__name__)
BROWSER = "orderflow_browser"
SESSION = "orderflow_session"
STATIC = Path(__file__).parent / "static"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
OPEN_PATHS = ("/login", "/static/")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _filters(env: jinja2.Environment) -> None:
    env.filters["ms"] = lambda v: "" if v is None else f"{v:,.1f}"
    env.filters["hms"] = lambda v: v.strftime("%H:%M:%S.%f")[:-3] if v else ""
    env.filters["when"] = lambda v: v.strftime("%Y-%m-%d %H:%M:%S") if v else ""
    env.filters["clock"] = lambda v: time.strftime("%H:%M:%S", time.localtime(v))
    env.filters["path"] = lambda v: quote(str(v), safe="")
    env.filters["text"] = lambda v: v.decode(errors="replace") if isinstance(v, bytes) else v


def create_app(settings: Settings, console: ConsoleSettings) -> web.Application:
    access = Access(settings.secrets_dir, session_seconds=console.session_hours * 3600)
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("orderflow.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    _filters(env)
    app = web.Application(
        middlewares=[_guard(access, console)], client_max_size=settings.consumer.max_body_bytes * 2
    )
    reads = Reads(settings)
    app[pages.CONTEXT] = pages.Context(settings, console, reads, env, access)

    async def close_connections(_: web.Application) -> None:
        await reads.close()

    app.on_cleanup.append(close_connections)
    app.add_routes(pages.routes)
    app.add_routes(actions.routes)
    app.router.add_static("/static/", STATIC, append_version=True)
    return app


def _guard(access: Access, console: ConsoleSettings) -> Any:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        browser = request.cookies.get(BROWSER, "")
        fresh = None
        if not 20 <= len(browser) <= 64 or not browser.replace("-", "").replace("_", "").isalnum():
            browser = fresh = secrets.token_urlsafe(24)
        request[pages.BROWSER_KEY] = browser
        request[pages.SESSION_KEY] = access.session(request.cookies.get(SESSION))
        try:
            if _host_name(request.host) not in console.hosts:
                raise web.HTTPMisdirectedRequest(
                    text="this console does not answer to that host name "
                    "(ORDERFLOW_CONSOLE_HOSTS lists those it does)"
                )
            if request.method not in ("GET", "HEAD"):
                await _check_post(request, access, fresh is None)
            elif (
                not console.anonymous_read
                and request[pages.SESSION_KEY] is None
                and not request.path.startswith(OPEN_PATHS)
            ):
                raise web.HTTPSeeOther("/login")
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status >= 400:
                response = pages.problem(request, exc.status, exc.text or exc.reason)
            else:  # the only redirect raised is the login page's
                response = pages.see_other("/login")
        except OrderflowError as exc:
            response = pages.problem(request, 400, str(exc))
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            log.warning("console.backend_unavailable", error=type(exc).__name__, path=request.path)
            response = pages.problem(
                request,
                503,
                f"a database or the broker did not answer ({type(exc).__name__}); "
                "`orderflow status` says which",
            )
        _harden(response, fresh)
        return response

    return guard


def _host_name(host: str) -> str:
    """The name of a Host header, without its port ("[::1]:8088" is "::1")."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


async def _check_post(request: web.Request, access: Access, had_cookie: bool) -> None:
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        raise web.HTTPForbidden(text="a form from another origin is refused")
    form = await request.post()
    token = form.get("csrf")
    if not had_cookie or not access.csrf_ok(
        request[pages.BROWSER_KEY], token if isinstance(token, str) else None
    ):
        raise web.HTTPForbidden(
            text="the form's CSRF token is missing or wrong: reload the page and send it again"
        )
    request[pages.FORM_KEY] = form


def _harden(response: web.StreamResponse, fresh_browser: str | None) -> None:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"  # "no-referrer" makes Origin: null
    response.headers.setdefault("Cache-Control", "no-store")
    if fresh_browser is not None:
        response.set_cookie(BROWSER, fresh_browser, httponly=True, samesite="Strict", path="/")


async def serve(
    settings: Settings, console: ConsoleSettings, *, ready: Callable[[int], None] | None = None
) -> None:
    """Serve until cancelled; ``ready`` gets the port once it listens."""
    runner = web.AppRunner(create_app(settings, console), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, console.host, console.port)
    await site.start()
    port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
    if console.port_file is not None:
        console.port_file.write_text(f"{port}\n")
    log.info("console.listening", host=console.host, port=port)
    if ready is not None:
        ready(port)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
