"""The frame every page shares: navigation, connection health, who is signed in."""

from __future__ import annotations

import html
import json
import urllib.parse
from typing import Any

from fastapi import Request
from nicegui import ui

from ..runtime import Console
from .auth import csrf_token, current_user

PAGES = (("/", "Live"), ("/alarms", "Alarms"), ("/models", "Models"), ("/training", "Training"))


def frame(console: Console, request: Request, title: str) -> tuple[str | None, str]:
    """Draw the header; return (signed-in user or None, the session's CSRF token)."""
    user = current_user(request)
    token = csrf_token(request)
    ui.page_title(f"{title} · edge-console")
    with ui.header().classes("items-center gap-6 bg-blue-grey-9 text-white"):
        ui.label("edge-console").classes("text-lg font-bold")
        for path, name in PAGES:
            link = ui.link(name, path).classes("text-white no-underline")
            if name == title:
                link.classes("font-bold underline")
            link.props(f"data-testid=nav-{name.lower()}")
        ui.space()
        health = ui.label().props("data-testid=health")

        def show_health() -> None:
            h = console.health()
            broker = "broker ✓" if h["broker_connected"] else "broker ✗ (reconnecting)"
            db = "database ✓" if h["database_ok"] else "database ✗ (buffering)"
            text = f"{broker} · {db}"
            if h["archive_pending"] > 50:
                text += f" · {h['archive_pending']} waiting"
            if h["dropped_events"] or h["dropped_scores"]:
                text += f" · {h['dropped_events'] + h['dropped_scores']} not archived"
            if health.text != text:
                health.text = text

        show_health()
        ui.timer(1.0, show_health)
        if user is None:
            next_path = urllib.parse.quote(request.url.path, safe="/")
            ui.link("Sign in", f"/login?next={next_path}").classes("text-white").props(
                "data-testid=sign-in-link"
            )
        else:
            ui.label(f"signed in: {user}").props("data-testid=user")
            ui.html(
                '<form method="post" action="/logout" style="margin:0">'
                f'<input type="hidden" name="csrf" value="{html.escape(token)}">'
                '<button type="submit" style="background:none;border:1px solid #fff8;'
                'color:#fff;border-radius:4px;padding:2px 8px;cursor:pointer">Sign out</button>'
                "</form>",
                sanitize=False,
            )
    return user, token


async def post_json(path: str, payload: dict[str, Any], token: str) -> dict[str, Any]:
    """POST JSON from the browser (so the request carries the session cookie, the CSRF
    header and the browser's Origin); return ``{"status": code, "body": json}``."""
    js = (
        f"fetch({json.dumps(path)}, {{method: 'POST', credentials: 'same-origin', "
        f"headers: {{'Content-Type': 'application/json', 'X-CSRF-Token': {json.dumps(token)}}}, "
        f"body: JSON.stringify({json.dumps(payload)})}})"
        ".then(async r => ({status: r.status, body: await r.json().catch(() => null)}))"
    )
    result = await ui.run_javascript(js, timeout=15.0)
    return result if isinstance(result, dict) else {"status": 0, "body": None}
