"""The web view's server (SPEC §9): its URLs, JSON, pushed updates and guards, over real HTTP
against a real `wfl ui` process. The browser-level behaviour is in test_ui_browser.py."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from uiserver import UI_FLOWS, WFL, UiServer, wfl, wfl_env

from wfl import Client
from wfl.testing import WorkflowTestEnv
from wfl.ui import model
from wfl.ui.hub import Hub, View

PIPELINE = str(UI_FLOWS / "pipeline.py")
APPROVAL = str(Path(__file__).resolve().parent.parent / "sample_flows" / "approval.py")


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def server(store: Path) -> Iterator[UiServer]:
    store.mkdir()
    srv = UiServer(store)
    yield srv
    assert srv.stop() == 0  # Ctrl-C stops it cleanly


def test_every_view_has_a_url_that_serves_the_page(server: UiServer, store: Path) -> None:
    run_id = Client(store).start(PIPELINE)
    for path in ("/", "/?state=failed&workflow=pipeline&page=2", f"/runs/{run_id}", "/schedules"):
        resp = server.request("GET", path)
        assert resp.status == 200, path
        assert "/static/app.js" in resp.text
    for asset in ("/static/app.js", "/static/app.css", "/static/icon.svg"):
        assert server.request("GET", asset).status == 200


def test_runs_api_filters_and_pages(server: UiServer, store: Path) -> None:
    client = Client(store)
    ids = [client.start(PIPELINE, {"batches": i}) for i in range(1, 4)]
    approval = client.start(APPROVAL, {"doc": "a.pdf"})
    client.cancel(ids[0])
    stream = server.stream("view=runs")  # the server learns of changes by its watcher: wait
    stream.until(lambda s: s["counts"]["canceled"] == 1 and s["all"] == 4)
    stream.close()
    page = server.request("GET", "/api/runs").json()
    assert [r["id"] for r in page["runs"]] == [approval, *reversed(ids)]  # newest first
    assert page["counts"] == {"in_progress": 3, "completed": 0, "failed": 0, "canceled": 1}
    assert page["workflows"] == ["approval", "pipeline"]
    assert page["runs"][0]["total"] == 0
    assert page["runs"][0]["done"] == 0
    only = server.request("GET", "/api/runs?state=canceled").json()
    assert [r["id"] for r in only["runs"]] == [ids[0]]
    by_workflow = server.request("GET", "/api/runs?workflow=approval").json()
    assert [r["id"] for r in by_workflow["runs"]] == [approval]
    by_prefix = server.request("GET", f"/api/runs?q={ids[1][:7]}").json()
    assert [r["id"] for r in by_prefix["runs"]] == [ids[1]]
    second = server.request("GET", "/api/runs?per_page=2&page=2").json()
    assert (second["page"], second["pages"], second["total"]) == (2, 2, 4)
    assert [r["id"] for r in second["runs"]] == [ids[1], ids[0]]


def test_a_run_started_from_the_cli_is_pushed_within_a_second(
    server: UiServer, store: Path
) -> None:
    stream = server.stream("view=runs")
    try:
        assert stream.next()["all"] == 0
        started = time.monotonic()
        run_id = wfl("start", PIPELINE, "--dir", store, cwd=store).strip()
        pushed = stream.until(lambda s: any(r["id"] == run_id for r in s["runs"]), timeout=5)
        # measured from when `wfl start` returned, the way a person sees it
        assert time.monotonic() - started < 1.0 + _wfl_start_cost(store)
        assert pushed["counts"]["in_progress"] == 1
    finally:
        stream.close()


def _wfl_start_cost(store: Path) -> float:
    began = time.monotonic()
    wfl("status", "--dir", store, "--limit", "1", cwd=store)
    return time.monotonic() - began


def test_a_run_page_is_pushed_as_its_steps_advance(server: UiServer, store: Path) -> None:
    run_id = Client(store).start(PIPELINE, {"batches": 2, "pause": 0.2})
    stream = server.stream(f"view=run&id={run_id[:6]}")  # a prefix names the run too
    worker = subprocess.Popen([WFL, "worker", "--dir", str(store)], env=wfl_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        first = stream.next()
        assert first["id"] == run_id
        assert first["state"] == "in_progress"
        seen_done = set()
        final = stream.until(
            lambda s: seen_done.add(s["done"]) or s["state"] == "completed", timeout=30
        )
        assert len(seen_done) >= 3  # several pushes as steps finished, not one at the end
        assert final["result"] == "loaded 201 rows"
        retried = final["timeline"][2]  # batch[1] fails once, then succeeds
        assert [a["outcome"] for a in retried["attempt_log"]] == ["failed", "done"]
        assert retried["attempt_log"][0]["error"] == "ConnectionError: warehouse connection reset"
        assert retried["attempt_log"][0]["retry_at"] is not None
        assert final["why"].startswith("nothing: it completed at")
        assert final["journal"][0]["t"] == "run"
        assert final["journal"][-1]["t"] == "end"
    finally:
        worker.send_signal(subprocess.signal.SIGTERM)  # type: ignore[attr-defined]
        worker.wait(timeout=30)
        stream.close()


def test_the_view_follows_either_store(store_spec: str, tmp_path: Path) -> None:
    """A journal directory (inotify) or PostgreSQL (its LISTEN/NOTIFY news, and a re-listing
    for step progress): starts, steps and a cancel from the page all reach the stream."""
    client = Client(store=store_spec)
    client.store.ensure()
    server = UiServer(store=store_spec, log_dir=tmp_path)
    stream = server.stream("view=runs")
    worker = subprocess.Popen([WFL, "worker", "--store", store_spec], env=wfl_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        assert stream.next()["all"] == 0
        run_id = client.start(PIPELINE, {"batches": 50, "pause": 0.2})
        stream.until(lambda s: any(r["id"] == run_id for r in s["runs"]))
        stream.until(lambda s: s["runs"][0]["done"] >= 3, timeout=20)  # steps advance
        csrf = {"X-Wfl-Csrf": server.csrf()}
        assert server.post(f"/api/runs/{run_id}/cancel", headers=csrf).status == 200
        stream.until(lambda s: s["runs"][0]["state"] == "canceled")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        stream.close()
        assert server.stop() == 0


def test_actions_need_the_page_token_and_a_same_origin(server: UiServer, store: Path) -> None:
    run_id = Client(store).start(PIPELINE)
    refused = server.post(f"/api/runs/{run_id}/cancel")
    assert refused.status == 403
    assert "X-Wfl-Csrf" in refused.text
    csrf = server.csrf()
    wrong = server.post(f"/api/runs/{run_id}/cancel", headers={"X-Wfl-Csrf": "0" * 32})
    assert wrong.status == 403
    cross = server.post(f"/api/runs/{run_id}/cancel",
                        headers={"X-Wfl-Csrf": csrf, "Origin": "http://evil.example"})  # fmt: skip
    assert cross.status == 403
    assert "Origin" in cross.text
    assert Client(store).status(run_id).state == "in_progress"  # nothing happened
    ok = server.post(f"/api/runs/{run_id}/cancel",
                     headers={"X-Wfl-Csrf": csrf, "Origin": server.base})  # fmt: skip
    assert ok.status == 200
    assert ok.json()["ok"] is True
    assert Client(store).status(run_id).state == "canceled"
    again = server.post(f"/api/runs/{run_id}/cancel", headers={"X-Wfl-Csrf": csrf})
    assert again.status == 409
    assert "already canceled" in again.json()["error"]


def test_send_event_and_restart_from_the_api(server: UiServer, store: Path) -> None:
    csrf = {"X-Wfl-Csrf": server.csrf()}
    waiting = Client(store).start(APPROVAL, {"doc": "a.pdf"})
    sent = server.post(f"/api/runs/{waiting}/event", {"name": "approved", "value": True},
                       headers=csrf)  # fmt: skip
    assert sent.status == 200
    events = Client(store).status(waiting).run_state.events  # type: ignore[union-attr]
    assert [(e["name"], e["value"]) for e in events] == [("approved", True)]
    nameless = server.post(f"/api/runs/{waiting}/event", {"value": 1}, headers=csrf)
    assert nameless.status == 409
    assert "name" in nameless.json()["error"]

    with WorkflowTestEnv(store) as env:  # a finished run to restart (under a fake clock)
        done_id = env.start(PIPELINE, {"batches": 2})
        env.run_until_idle()
    assert Client(store).status(done_id).state == "completed"
    restarted = server.post(f"/api/runs/{done_id}/restart", {"from": "1"}, headers=csrf)
    assert restarted.status == 200
    assert "from step 1" in restarted.json()["message"]
    assert Client(store).status(done_id).state == "in_progress"
    running = server.post(f"/api/runs/{done_id}/restart", {"from": ""}, headers=csrf)
    assert running.status == 409
    assert "still in progress" in running.json()["error"]
    assert server.post("/api/runs/zzzz/cancel", headers=csrf).status == 404


def test_schedules_are_listed_and_paused_resumed_triggered_live(
    server: UiServer, store: Path
) -> None:
    client = Client(store)
    client.add_schedule("nightly", PIPELINE, cron="0 3 * * *", tz="Europe/Berlin")
    stream = server.stream("view=schedules")
    try:
        listed = stream.until(lambda s: len(s["schedules"]) == 1)
        nightly = listed["schedules"][0]
        assert (nightly["name"], nightly["cron"], nightly["paused"]) == (
            "nightly", "0 3 * * *", False,
        )  # fmt: skip
        assert nightly["next_fire_at"] is not None
        csrf = {"X-Wfl-Csrf": server.csrf()}
        assert server.post("/api/schedules/nightly/pause").status == 403  # the guard
        assert server.post("/api/schedules/nightly/pause", headers=csrf).status == 200
        paused = stream.until(lambda s: s["schedules"][0]["paused"])
        assert paused["schedules"][0]["next_fire_at"] is None
        assert server.post("/api/schedules/nightly/resume", headers=csrf).status == 200
        stream.until(lambda s: not s["schedules"][0]["paused"])
        assert server.post("/api/schedules/nightly/trigger", headers=csrf).status == 200
        fired = stream.until(lambda s: s["schedules"][0]["last_run"] is not None)
        run_id = fired["schedules"][0]["last_run"]
        assert client.status(run_id).workflow == "pipeline"
        client.cancel(run_id)  # the last run's state is pushed as it changes
        stream.until(lambda s: s["schedules"][0]["last_run_state"] == "canceled")
        unknown = server.post("/api/schedules/nope/pause", headers=csrf)
        assert unknown.status == 409
    finally:
        stream.close()


def test_the_host_header_must_name_this_server(server: UiServer) -> None:
    # a DNS-rebinding page reaches 127.0.0.1 under its own name: refused
    rebound = server.request("GET", "/api/runs", headers={"Host": f"evil.example:{server.port}"})
    assert rebound.status == 403
    assert server.request("GET", "/", headers={"Host": f"localhost:{server.port}"}).status == 200


def test_another_host_requires_the_printed_token(store: Path) -> None:
    store.mkdir()
    srv = UiServer(store, host="127.0.0.2")
    try:
        assert srv.token is not None
        assert len(srv.token) == 32
        assert srv.url == f"http://127.0.0.2:{srv.port}/?token={srv.token}"
        for path in ("/", "/api/runs", "/api/stream", "/static/app.js", "/runs/abc"):
            resp = srv.request("GET", path)
            assert resp.status == 401, path
            assert "token" in resp.text
        assert srv.request("GET", "/api/runs?token=" + "f" * 32).status == 401
        first = srv.request("GET", f"/?token={srv.token}")
        assert first.status == 200
        cookie = first.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        with_cookie = srv.request("GET", "/api/runs", headers={"Cookie": cookie.split(";")[0]})
        assert with_cookie.status == 200
        assert srv.request("GET", "/api/runs", headers=srv.auth()).status == 200
        # the token alone does not make a POST: the page's CSRF header is still needed
        assert srv.post("/api/runs/abc/cancel").status == 403
    finally:
        assert srv.stop() == 0


def test_a_port_in_use_is_one_line_and_exit_2(server: UiServer, store: Path) -> None:
    done = subprocess.run([WFL, "ui", "--dir", str(store), "--port", str(server.port)],
                          capture_output=True, text=True, env=wfl_env(), timeout=30)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("wfl: error: cannot listen on 127.0.0.1:")
    assert len(done.stderr.splitlines()) == 1


def test_without_the_extra_wfl_ui_says_what_to_install(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['starlette'] = None; sys.argv = ['wfl', 'ui'];"
        "from wfl.entry import main; main()"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, env=wfl_env(), timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == (
        "wfl: error: wfl ui needs the ui extra (starlette missing): pip install 'wfl[ui]'\n"
    )


def test_store_and_dir_together_are_bad_input(tmp_path: Path) -> None:
    done = subprocess.run([WFL, "ui", "--dir", "a", "--store", "b"], capture_output=True,
                          text=True, env=wfl_env(), timeout=30, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("wfl: error: give --store or --dir, not both")
    assert len(done.stderr.splitlines()) == 1


# -- the hub, in-process: one watcher fanned out ----------------------------------------------


def test_one_batch_of_changes_is_computed_once_for_all_viewers(tmp_path: Path) -> None:
    client = Client(tmp_path)
    first = client.start(PIPELINE)

    async def scenario() -> None:
        changes: asyncio.Queue[set[str]] = asyncio.Queue()

        async def feed(store: Any, stop: asyncio.Event) -> AsyncIterator[set[str]]:
            yield set()  # listening
            while True:
                yield await changes.get()

        hub = Hub(client, feed=feed)
        computed: list[View] = []
        original = hub.snapshot

        async def counting(view: View) -> str:
            computed.append(view)
            return await original(view)

        hub.snapshot = counting  # type: ignore[method-assign]
        await hub.start()
        viewers = [await hub.subscribe(View("runs")) for _ in range(5)]
        other = await hub.subscribe(View("runs", state="canceled"))
        for v in [*viewers, other]:
            await v.next(1)
        computed.clear()
        second = await asyncio.to_thread(client.start, PIPELINE)
        changes.put_nowait({second})
        got = [await v.next(2) for v in viewers]
        assert all(g is not None and second in g for g in got)
        assert computed.count(View("runs")) == 1  # once, for five viewers
        assert await other.next(1) is not None  # its counts changed
        computed.clear()
        changes.put_nowait({second})  # a signal without a change to show: nothing is sent
        assert await viewers[0].next(0.2) is None
        assert computed == []
        await asyncio.to_thread(client.cancel, first)
        changes.put_nowait({first})
        canceled = await other.next(2)
        assert canceled is not None
        assert first in canceled
        await hub.stop()

    asyncio.run(scenario())


def test_rows_follow_runs_that_vanish(tmp_path: Path) -> None:
    client = Client(tmp_path)
    rows = model.RunRows()
    run_id = client.start(PIPELINE)
    assert rows.apply(model.read_rows(client, [run_id])) == {run_id}
    assert rows.apply(model.read_rows(client, [run_id])) == set()  # unchanged: nothing to push
    client.cancel(run_id)
    with WorkflowTestEnv(tmp_path) as env:
        env.run_until_idle()  # the worker records the end
    client.cleanup(run_id)
    assert rows.apply(model.read_rows(client, [run_id])) == {run_id}
    assert rows.page()["all"] == 0


def test_a_run_page_shows_the_current_generation_and_the_newest_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with WorkflowTestEnv(tmp_path) as env:
        run_id = env.start(PIPELINE, {"batches": 3})
        env.run_until_idle()
        env.client.restart(run_id, 2)  # batch[1] runs again: fails once, then succeeds
        env.run_until_idle()
        detail = model.run_detail(env.client, run_id)
        assert detail["state"] == "completed"
        retried = detail["timeline"][2]
        assert retried["name"] == "batch[1]"
        assert [a["outcome"] for a in retried["attempt_log"]] == ["failed", "done"]
        assert [j["t"] for j in detail["journal"]].count("restart") == 1
        monkeypatch.setattr(model, "STEPS_SHOWN", 2)
        monkeypatch.setattr(model, "JOURNAL_SHOWN", 3)
        cut = model.run_detail(env.client, run_id)
        assert [s["name"] for s in cut["timeline"]] == ["batch[2]", "load"]
        assert cut["total"] == 5
        assert [j["i"] for j in cut["journal"]] == [cut["journal_total"] - 3 + i for i in range(3)]


def test_values_json_cannot_hold_are_shown_not_fatal(tmp_path: Path) -> None:
    """msgpack holds bytes and bytes-keyed dicts; the page shows them as their repr."""
    from wfl.ui.hub import dumps

    with WorkflowTestEnv(tmp_path) as env:
        run_id = env.start(str(UI_FLOWS / "bytes_keys.py"))
        env.run_until_idle()
        detail = model.run_detail(env.client, run_id)
    text = dumps(detail)
    assert "b'key'" in text
    assert "\\\\x00value" in text
