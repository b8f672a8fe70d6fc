"""A page of another origin, open in a local browser, tries to use an engine that has no token: nothing
is created.

The engine serves 127.0.0.1:<port> with no client, worker or studio token (loopback peers are served).
The page comes from another server, at ``http://attacker.localhost:<other port>`` (Chromium resolves
``*.localhost`` to loopback itself): the browser is the only thing that could carry its requests.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import Page
from support.browser import ServedEngine

ATTACK = """
async (api) => {
  const sent = [];
  const send = async (label, path, init) => {
    try {
      const response = await fetch(api + path, init);
      sent.push([label, response.type, response.status]);
    } catch (error) {
      sent.push([label, "blocked", String(error)]);
    }
  };
  const job = JSON.stringify({payload: "from another origin"});
  const worker = JSON.stringify({worker_id: "intruder", supported_tasks: ["echo"]});
  // Simple requests need no preflight: sent, their answers unreadable.
  await send("job, no-cors text/plain", "/api/v1/jobs/studio_echo",
             {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body: job});
  await send("worker, no-cors text/plain", "/_worker/workers/register",
             {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body: worker});
  await send("job, no-cors form", "/api/v1/jobs/studio_echo",
             {method: "POST", mode: "no-cors", body: new URLSearchParams({payload: "x"})});
  // JSON asks for a preflight, which the engine does not grant.
  await send("job, cors json", "/api/v1/jobs/studio_echo",
             {method: "POST", headers: {"Content-Type": "application/json"}, body: job});
  await send("worker, cors json", "/_worker/workers/register",
             {method: "POST", headers: {"Content-Type": "application/json"}, body: worker});
  // A long poll would take a task meant for a worker.
  await send("poll, no-cors", "/_worker/workers/echo-real/tasks/next", {mode: "no-cors"});
  // WebSockets are not bound by CORS at all.
  const socket = await new Promise((resolve) => {
    const ws = new WebSocket(api.replace("http", "ws") + "/_worker/ws/echo-real");
    ws.onopen = () => { ws.close(); resolve("open"); };
    ws.onerror = () => resolve("refused");
  });
  sent.push(["websocket", socket, 0]);
  return sent;
}
"""

PAGE = b"<!doctype html><title>another origin</title><p>Nothing to see here.</p>"


class _PageHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


@pytest.fixture(scope="module")
def other_origin() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PageHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://attacker.localhost:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture(scope="module")
def open_engine() -> Iterator[ServedEngine]:
    served = ServedEngine(CLIENT_TOKEN=None, GLOBAL_WORKER_TOKEN=None, STUDIO_TOKEN=None).start()
    try:
        served.call(served.engine.register_worker({"worker_id": "echo-real", "supported_tasks": ["echo"]}))
        yield served
    finally:
        served.stop()


def test_a_page_of_another_origin_creates_nothing(page: Page, open_engine: ServedEngine, other_origin: str) -> None:
    # The engine is open to this browser: its own pages work.
    page.goto(f"{open_engine.url}/studio/blueprints")
    assert page.locator("h1").first.is_visible()

    page.goto(other_origin)
    sent = page.evaluate(ATTACK, open_engine.url)
    outcome = {label: (kind, status) for label, kind, status in sent}
    for label in ("job, no-cors text/plain", "worker, no-cors text/plain", "job, no-cors form", "poll, no-cors"):
        assert outcome[label][0] == "opaque", sent  # the browser sent them (their answers unreadable)
    assert outcome["websocket"][0] == "refused", sent
    assert outcome["job, cors json"][0] == "blocked", sent
    assert outcome["worker, cors json"][0] == "blocked", sent

    engine = open_engine.engine
    assert open_engine.call(engine.list_jobs()) == []
    assert [w.worker_id for w in open_engine.call(engine.list_workers())] == ["echo-real"]
    assert not open_engine.engine.channels.connected("echo-real")
