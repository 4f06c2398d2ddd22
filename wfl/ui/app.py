"""The web view's routes: pages (one HTML shell for every stable URL), JSON, the event stream
(Server-Sent Events) and the actions, as a Starlette app wrapped in the Guard."""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
from collections.abc import AsyncIterator
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from wfl.client import Client
from wfl.errors import InvalidRunId, RunNotFound, WflError

from . import model, schedules
from .guard import Guard
from .hub import Hub, View, dumps

KEEPALIVE = 15.0  # seconds between SSE comments on a quiet stream (proxies drop idle ones)
STATIC = resources.files("wfl.ui") / "static"


def _version() -> str:
    try:
        return version("wfl")
    except PackageNotFoundError:
        return "dev"


def create_app(
    client: Client, *, csrf: str, token: str | None, hosts: set[str], hub: Hub | None = None
) -> Guard:
    hub = hub or Hub(client)
    shell = (STATIC / "index.html").read_text(encoding="utf-8")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await hub.start()
        try:
            yield
        finally:
            await hub.stop()

    async def page(request: Request) -> HTMLResponse:
        """Every page URL gets the same shell; the script draws the view the URL names."""
        config = {"csrf": csrf, "store": client.dir, "version": _version(),
                  "schedules": schedules.available(client)}  # fmt: skip
        body = shell.replace("{{config}}", html.escape(json.dumps(config), quote=True))
        return HTMLResponse(body, headers=_NO_STORE)

    async def runs(request: Request) -> Response:
        return _json(hub.runs_page(_runs_view(request)))

    async def run(request: Request) -> Response:
        run_id = await _resolve(client, request.path_params["run_id"])
        if isinstance(run_id, Response):
            return run_id
        return Response(await hub.snapshot(View("run", run_id=run_id)),
                        media_type="application/json", headers=_NO_STORE)  # fmt: skip

    async def stream(request: Request) -> Response:
        kind = request.query_params.get("view", "runs")
        if kind == "run":
            run_id = await _resolve(client, request.query_params.get("id", ""))
            if isinstance(run_id, Response):
                return run_id
            view = View("run", run_id=run_id)
        elif kind == "schedules":
            view = View("schedules")
        else:
            view = _runs_view(request)
        sub = await hub.subscribe(view)

        async def events() -> AsyncIterator[str]:
            try:
                yield "retry: 1000\n\n"  # reconnect quickly after a server restart
                while True:
                    snapshot = await sub.next(KEEPALIVE)
                    if sub.closed:
                        return
                    yield ": keep-alive\n\n" if snapshot is None else f"data: {snapshot}\n\n"
            finally:
                hub.unsubscribe(sub)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={**_NO_STORE, "X-Accel-Buffering": "no"})  # fmt: skip

    async def action(request: Request) -> Response:
        run_id = await _resolve(client, request.path_params["run_id"])
        if isinstance(run_id, Response):
            return run_id
        what = request.path_params["action"]
        body = await _body(request)
        try:
            if what == "cancel":
                await asyncio.to_thread(client.cancel, run_id)
                return _json({"ok": True, "message": f"canceled {run_id}"})
            if what == "restart":
                step = body.get("from")
                n = await asyncio.to_thread(client.restart, run_id, step if step != "" else None)
                return _json({"ok": True, "message": f"restarted {run_id} from step {n}"})
            if what == "event":
                name = str(body.get("name") or "")
                await asyncio.to_thread(client.send_event, run_id, name, body.get("value"))
                return _json({"ok": True, "message": f"sent {name} to {run_id}"})
        except WflError as exc:
            return _json({"ok": False, "error": str(exc)}, 409)
        return _json({"ok": False, "error": f"no action {what!r}"}, 404)

    async def schedule_list(request: Request) -> Response:
        return _json(await asyncio.to_thread(schedules.list_schedules, client))

    async def schedule_action(request: Request) -> Response:
        name, what = request.path_params["name"], request.path_params["action"]
        try:
            await asyncio.to_thread(schedules.act, client, name, what)
        except WflError as exc:
            return _json({"ok": False, "error": str(exc)}, 409)
        return _json({"ok": True, "message": f"{what} {name}"})

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/runs/{run_id}", page),
            Route("/schedules", page),
            Route("/api/runs", runs),
            Route("/api/runs/{run_id}", run),
            Route("/api/runs/{run_id}/{action}", action, methods=["POST"]),
            Route("/api/stream", stream),
            Route("/api/schedules", schedule_list),
            Route("/api/schedules/{name}/{action}", schedule_action, methods=["POST"]),
            Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
        ],
        lifespan=lifespan,
    )
    app.state.hub = hub
    return Guard(app, csrf=csrf, token=token, hosts=hosts)


_NO_STORE = {"Cache-Control": "no-store"}


def _json(data: Any, status: int = 200) -> Response:
    return Response(dumps(data), status_code=status, media_type="application/json",
                    headers=_NO_STORE)  # fmt: skip


def _runs_view(request: Request) -> View:
    q = request.query_params
    state = q.get("state", "")
    return View(
        "runs",
        state=state if state in model.STATES else "",
        workflow=q.get("workflow", ""),
        prefix=q.get("q", "").strip().lower(),
        page=_int(q.get("page"), 1),
        per_page=_int(q.get("per_page"), model.PER_PAGE),
    )


def _int(text: str | None, default: int) -> int:
    return int(text) if text and text.isdigit() else default


async def _resolve(client: Client, prefix: str) -> str | Response:
    try:
        return await asyncio.to_thread(client.resolve, prefix)
    except (RunNotFound, InvalidRunId) as exc:
        return _json({"error": str(exc)}, 404)
    except WflError as exc:  # ambiguous
        return _json({"error": str(exc)}, 400)


async def _body(request: Request) -> dict[str, Any]:
    with contextlib.suppress(ValueError):
        data = await request.json()
        if isinstance(data, dict):
            return data
    return {}
