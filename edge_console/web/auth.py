"""Sign-in, sessions and CSRF protection for the console's state-changing requests.

* Users and their argon2 hashes come from the configuration (``edge-console hash-password``).
* The session is Starlette's signed cookie (``SameSite=Strict``, HttpOnly), rotated at
  sign-in so a session id planted before sign-in is worthless afterwards.
* Every state-changing request is a POST that must carry the session's CSRF token (a form
  field, or the ``X-CSRF-Token`` header for the JSON API) and, when the browser sends one,
  an ``Origin`` of this very site. Views are open; every action needs a signed-in user.
* Repeated failed sign-ins for a name are slowed down (locked for a minute after five).
"""

from __future__ import annotations

import hmac
import html
import secrets
import time
from collections import defaultdict, deque
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from edge_agent.logging_setup import get_logger

from ..config import ConsoleSettings

CSRF_HEADER = "x-csrf-token"
_FAILS_ALLOWED = 5
_FAIL_WINDOW_S = 300.0
_LOCK_S = 60.0

_hasher = PasswordHash((Argon2Hasher(),))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


class Users:
    """The configured users; verification takes the same time for unknown names."""

    def __init__(self, settings: ConsoleSettings) -> None:
        self._hashes = {u.name: u.password_hash.get_secret_value() for u in settings.users}
        self._dummy = hash_password(secrets.token_urlsafe(16))
        self._fails: dict[str, deque[float]] = defaultdict(deque)
        self.log = get_logger(component="console_auth")

    def __bool__(self) -> bool:
        return bool(self._hashes)

    def locked(self, name: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        fails = self._fails[name]
        while fails and now - fails[0] > _FAIL_WINDOW_S:
            fails.popleft()
        return len(fails) >= _FAILS_ALLOWED and now - fails[-1] < _LOCK_S

    def verify(self, name: str, password: str) -> bool:
        if self.locked(name):
            self.log.warning("console_sign_in_locked", user=name)
            return False
        stored = self._hashes.get(name)
        try:
            ok = _hasher.verify(password, stored or self._dummy) and stored is not None
        except Exception:  # a malformed hash in the config: refuse, say so
            self.log.error("console_bad_password_hash", user=name)
            ok = False
        if not ok:
            self._fails[name].append(time.monotonic())
            self.log.warning("console_sign_in_failed", user=name)
        else:
            self._fails.pop(name, None)
            self.log.info("console_signed_in", user=name)
        return ok


def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first use)."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def current_user(request: Request) -> str | None:
    user = request.session.get("user")
    return user if isinstance(user, str) else None


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return origin is None
    parts = urlsplit(origin)
    return parts.netloc == request.headers.get("host", "") and parts.scheme in ("http", "https")


def check_csrf(request: Request, supplied: str | None) -> bool:
    expected = request.session.get("csrf")
    return (
        isinstance(expected, str)
        and isinstance(supplied, str)
        and hmac.compare_digest(expected.encode(), supplied.encode())
        and same_origin(request)
    )


def sign_in(request: Request, user: str) -> None:
    """Rotate the session: nothing from before sign-in survives but NiceGUI's own id."""
    keep = {k: v for k, v in request.session.items() if k == "id"}
    request.session.clear()
    request.session.update(keep)
    request.session["user"] = user
    request.session["csrf"] = secrets.token_urlsafe(32)
    request.session["signed_in_at"] = time.time()


def sign_out(request: Request) -> None:
    keep = {k: v for k, v in request.session.items() if k == "id"}
    request.session.clear()
    request.session.update(keep)


def safe_next(target: Any) -> str:
    """Only local paths: never redirect to another site after sign-in."""
    if isinstance(target, str) and target.startswith("/") and not target.startswith("//"):
        return target
    return "/"


def login_page(token: str, next_path: str, error: str | None = None) -> str:
    """The sign-in form (plain HTML: it must work before any websocket exists)."""
    message = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in · edge-console</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{{font-family:system-ui,sans-serif;background:#eceff1;display:flex;justify-content:center;
margin-top:12vh}} form{{background:#fff;padding:2em;border-radius:8px;min-width:18em;
box-shadow:0 2px 8px #0002}} label{{display:block;margin-top:1em}} input{{width:100%;
padding:.5em;box-sizing:border-box}} button{{margin-top:1.5em;width:100%;padding:.6em;
background:#1565c0;color:#fff;border:0;border-radius:4px;font-size:1em}}
.error{{color:#c62828}}</style></head>
<body><form method="post" action="/login">
<h2>edge-console</h2>{message}
<input type="hidden" name="csrf" value="{html.escape(token)}">
<input type="hidden" name="next" value="{html.escape(next_path)}">
<label>User <input name="username" id="username" autocomplete="username" required></label>
<label>Password <input name="password" id="password" type="password"
 autocomplete="current-password" required></label>
<button type="submit" id="sign-in">Sign in</button>
</form></body></html>"""
