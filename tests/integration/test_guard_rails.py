"""Guard rails: upstream redirects are never followed (credentials stay with the configured host),
oversized headers are refused with 431, and the process keeps serving."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from support.ensemble import Ensemble, openai_provider

pytestmark = pytest.mark.integration

SECRET = "sk-redirect-" + secrets.token_hex(16)


class Recorder(ThreadingHTTPServer):
    """A plain HTTP server that records what it receives; answers with a redirect when told to."""

    def __init__(self, location: str | None, status: int = 307) -> None:
        self.location = location
        self.status = status
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                outer.seen.append((self.command, self.path, dict(self.headers)))
                if outer.location is not None:
                    self.send_response(outer.status)
                    self.send_header("location", outer.location + self.path)
                    self.send_header("content-length", "0")
                    self.end_headers()
                else:
                    body = b'{"error": {"message": "you should never see this"}}'
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            do_POST = do_GET = _answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Ensemble, Recorder, Recorder]]:
    thief = Recorder(None)
    redirector = Recorder(thief.url)
    provider = openai_provider(
        redirector.url,
        name="redirecting",
        models=["gpt-r"],
        endpoints=[{"id": "r-1", "api_key": SECRET}],
        http="1.1",  # http.server speaks HTTP/1.1 only, whatever ENSEMBLE_UPSTREAM_HTTP says
    )
    server = Ensemble(Path(tmp_path_factory.mktemp("guard")), providers=[provider])
    yield server, redirector, thief
    server.stop()
    for recorder in (redirector, thief):
        recorder.shutdown()
        recorder.server_close()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_upstream_redirects_are_not_followed(setup: tuple[Ensemble, Recorder, Recorder], status: int) -> None:
    server, redirector, thief = setup
    redirector.status = status
    before = len(redirector.seen)
    with server.client() as c:
        for stream in (False, True):
            r = c.post(
                "/api/v1/stream" if stream else "/api/v1/generate",
                json={"model": "gpt-r", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert r.status_code == 502, r.text
            assert r.json()["error"]["type"] == "provider_error"
            assert SECRET not in r.text
    assert len(redirector.seen) == before + 2
    assert redirector.seen[-1][2]["Authorization"] == f"Bearer {SECRET}"  # the configured host got it
    assert thief.seen == []  # the host the redirect pointed at got nothing at all


def test_oversized_headers_are_refused_and_the_server_keeps_serving(
    setup: tuple[Ensemble, Recorder, Recorder],
) -> None:
    server, _, _ = setup
    # Granian (hyper) refuses a request head over ~128 KiB, or with more than ~100 header fields.
    r = httpx.get(f"{server.url}/health", headers={"x-padding": "a" * 256_000})
    assert r.status_code == 431
    r = httpx.get(f"{server.url}/health", headers={f"x-h{i}": "v" for i in range(150)})
    assert r.status_code == 431
    assert httpx.get(f"{server.url}/health", headers={"x-padding": "a" * 8000}).status_code == 200
    with server.client() as c:
        r = c.post("/api/v1/generate", json={"model": "gpt-r", "messages": []})
        assert r.status_code == 400  # and it keeps serving
