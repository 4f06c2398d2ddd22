"""Who may talk to the web view: the access token, the Host check, the cross-site-request guard.

- Bound to loopback (the default), the server trusts the machine's users, but not web pages
  they visit: a request must name this server in its Host header (so a DNS-rebinding page
  cannot read it), and every POST must carry the per-server token in the `X-Wfl-Csrf` header
  and, when the browser sends one, an Origin equal to the server's own. The token is written
  into the page the server serves; another site's script can neither read it nor send a
  custom header without a CORS preflight, which is never granted.
- Bound anywhere else, every request must also carry the access token printed at start:
  `?token=` (which sets an HttpOnly, SameSite=Strict cookie for the page's own requests), the
  cookie, or an `X-Wfl-Token` header. Without it: 401.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK = ("127.0.0.1", "localhost", "::1")
COOKIE = "wfl_ui_token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def is_loopback(host: str) -> bool:
    return host in LOOPBACK


def _same(a: str | None, b: str) -> bool:
    return a is not None and hmac.compare_digest(a.encode(), b.encode())


class Guard:
    """ASGI middleware in front of the app; pure ASGI so streamed responses pass untouched."""

    def __init__(self, app: ASGIApp, *, csrf: str, token: str | None, hosts: set[str]) -> None:
        self.app = app
        self.csrf = csrf
        self.token = token  # None: loopback, no access token
        self.hosts = hosts  # acceptable Host headers (with port) when there is no token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        set_cookie = False
        if self.token is None:
            if host not in self.hosts:
                await _refuse(send, 403, f"this server answers to {sorted(self.hosts)[0]} only")
                return
        else:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            from_query = (query.get("token") or [None])[0]
            cookie = SimpleCookie(headers.get("cookie", "")).get(COOKIE)
            given = [from_query, headers.get("x-wfl-token"), cookie.value if cookie else None]
            if not any(_same(g, self.token) for g in given):
                await _refuse(
                    send, 401, "this wfl ui needs its token: open the URL that `wfl ui` printed"
                )
                return
            set_cookie = _same(from_query, self.token)
        if scope["method"] not in SAFE_METHODS:
            origin = headers.get("origin")
            scheme = scope.get("scheme", "http")
            if origin is not None and origin != f"{scheme}://{host}":
                await _refuse(send, 403, "cross-site request refused (Origin)")
                return
            if not _same(headers.get("x-wfl-csrf"), self.csrf):
                await _refuse(send, 403, "request refused: it lacks this page's X-Wfl-Csrf header")
                return
        if not set_cookie:
            await self.app(scope, receive, send)
            return
        cookie_header = f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict".encode(
            "latin-1"
        )

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"set-cookie", cookie_header)]
            await send(message)

        await self.app(scope, receive, send_with_cookie)


async def _refuse(send: Send, status: int, text: str) -> None:
    body = f"{status}: {text}\n".encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    ]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})
