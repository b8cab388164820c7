"""The web server: FastAPI routes for sign-in and actions, NiceGUI pages on top, one loop.

The console runs NiceGUI inside its own FastAPI app (``ui.run_with``) served by uvicorn in
the same asyncio loop as the MQTT subscriber and the archive writer, so a page update is
a function call away from the message that caused it.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import uvicorn
from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from nicegui import ui
from starlette.middleware.sessions import SessionMiddleware

from ..commands import CommandError, build_command, send_command
from ..runtime import Console
from . import alarms_page, live_page, models_page, training_page
from .auth import (
    CSRF_HEADER,
    Users,
    check_csrf,
    csrf_token,
    current_user,
    login_page,
    safe_next,
    sign_in,
    sign_out,
)

_UNIT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def _forbidden(reason: str) -> JSONResponse:
    return JSONResponse({"ok": False, "sent": False, "message": reason}, status_code=403)


def build_app(console: Console) -> FastAPI:
    settings = console.settings
    users = Users(settings)
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    secret = settings.web.session_secret
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret.get_secret_value() if secret else secrets.token_urlsafe(32),
        session_cookie="edge_console_session",
        max_age=settings.web.session_max_age_seconds,
        same_site="strict",
        https_only=False,
    )

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/") -> HTMLResponse:
        error = None if users else "No users are configured: add one under `users`."
        return HTMLResponse(login_page(csrf_token(request), safe_next(next), error))

    @app.post("/login")
    async def login(
        request: Request,
        username: str = Form(""),
        password: str = Form(""),
        csrf: str = Form(""),
        next: str = Form("/"),
    ) -> Response:
        if not check_csrf(request, csrf):
            return HTMLResponse(
                login_page(csrf_token(request), safe_next(next), "Session expired; try again."),
                status_code=403,
            )
        if not await asyncio.to_thread(users.verify, username, password):
            return HTMLResponse(
                login_page(csrf_token(request), safe_next(next), "Wrong user or password."),
                status_code=401,
            )
        sign_in(request, username)
        return RedirectResponse(safe_next(next), status_code=303)

    @app.post("/logout")
    async def logout(request: Request, csrf: str = Form("")) -> Response:
        if not check_csrf(request, csrf):
            return HTMLResponse("CSRF check failed", status_code=403)
        sign_out(request)
        return RedirectResponse("/", status_code=303)

    @app.post("/api/alarms/command")
    async def alarm_command(request: Request) -> JSONResponse:
        user = current_user(request)
        if user is None:
            return JSONResponse(
                {"ok": False, "sent": False, "message": "sign in first"}, status_code=401
            )
        if not check_csrf(request, request.headers.get(CSRF_HEADER)):
            return _forbidden("CSRF check failed")
        try:
            body: Any = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return JSONResponse(
                {"ok": False, "sent": False, "message": "JSON object expected"}, 400
            )
        plant, unit = body.get("plant"), body.get("unit")
        if plant not in settings.plants or not isinstance(unit, str) or not unit:
            return JSONResponse({"ok": False, "sent": False, "message": "unknown plant/unit"}, 400)
        if not set(unit) <= _UNIT_CHARS:
            return JSONResponse({"ok": False, "sent": False, "message": "bad unit name"}, 400)
        try:
            doc = build_command(
                str(body.get("command")),
                operator=user,  # always the signed-in user, never the browser's word
                alarm=body.get("alarm"),
                sensor=body.get("sensor"),
                comment=str(body["comment"])[:500] if body.get("comment") else None,
                duration_seconds=body.get("duration_seconds"),
                one_shot=body.get("one_shot"),
            )
        except (CommandError, TypeError) as exc:
            return JSONResponse({"ok": False, "sent": False, "message": str(exc)}, 400)
        result = await send_command(console.subscriber, console.state, plant, unit, doc)
        return JSONResponse(
            {
                "ok": result.ok,
                "sent": result.sent,
                "request_id": result.request_id,
                "reply": result.reply,
                "message": result.describe(),
            },
            status_code=200 if result.sent else 503,
        )

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        return console.health()

    live_page.register(console)
    alarms_page.register(console)
    models_page.register(console, app)
    training_page.register(console, app)
    ui.run_with(
        app,
        title="edge-console",
        storage_secret=None,  # the session middleware above is reused
        show_welcome_message=False,
        reconnect_timeout=10.0,
    )
    return app


async def serve(console: Console, stop: asyncio.Event | None = None) -> None:
    """Web server + subscriber + writer until SIGINT/SIGTERM (or ``stop``)."""
    settings = console.settings
    app = build_app(console)
    config = uvicorn.Config(
        app,
        host=settings.web.host,
        port=settings.web.port,
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    background_stop = asyncio.Event()
    background = asyncio.create_task(console.run_background(background_stop))
    watcher: asyncio.Task[None] | None = None
    if stop is not None:

        async def watch() -> None:
            await stop.wait()
            server.should_exit = True

        watcher = asyncio.create_task(watch())
    try:
        await server.serve()
    finally:
        if watcher is not None:
            watcher.cancel()
        background_stop.set()
        await background
