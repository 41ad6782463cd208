"""An endpoint that echoes request headers never puts the API key on the terminal or on disk (issue 15, item 12).

A real HTTP server on loopback, speaking just enough of the OpenAI chat API: it answers with
the request's own headers, in an error body or inside a completion.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dpo_cli.config.schema import EndpointSection
from dpo_cli.errors import DpoError
from dpo_cli.evaluation.judges import ChatEndpoint, scrub

KEY = "sk-live-4f9a1c2e8b7d6a5f3e2d1c0b"


class EchoHeaders(BaseHTTPRequestHandler):
    """401/403/400/500 bodies and 200 completions that repeat every request header back."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        # Authorization first, so that even a message cut to its first 200 characters carries it.
        headers = dict(sorted(self.headers.items(), key=lambda item: item[0].lower() != "authorization"))
        status = int(self.server.status)  # type: ignore[attr-defined]
        if status == 200:
            body = {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": f"Verdict: A. You sent {headers}"},
                    }
                ],
            }
        else:
            body = {"error": {"message": f"rejected request with headers {json.dumps(headers)}", "type": "bad"}}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:  # keep the test output clean
        pass


@pytest.fixture()
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), EchoHeaders)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def endpoint(httpd: ThreadingHTTPServer, monkeypatch) -> ChatEndpoint:
    monkeypatch.setenv("JUDGE_KEY", KEY)
    section = EndpointSection(
        base_url=f"http://127.0.0.1:{httpd.server_address[1]}/v1", model="m", api_key_env="JUDGE_KEY", max_retries=0
    )
    return ChatEndpoint(section, key="eval.judge", role="judge")


@pytest.mark.parametrize("status", [400, 401, 403, 404, 500])
def test_error_bodies_are_scrubbed_before_they_are_printed(server, monkeypatch, status: int) -> None:
    server.status = status
    with pytest.raises(DpoError) as info:
        endpoint(server, monkeypatch).complete([{"role": "user", "content": "hi"}], max_tokens=1)
    text = str(info.value)
    assert KEY not in text and KEY[:12] not in text
    if status in (400, 404, 500):  # these carry the body; it was there, minus the key
        assert "rejected request with headers" in text and "[redacted]" in text


def test_replies_are_scrubbed_before_they_are_judged_or_written(server, monkeypatch) -> None:
    server.status = 200
    text, finished = endpoint(server, monkeypatch).complete([{"role": "user", "content": "hi"}], max_tokens=8)
    assert finished and text.startswith("Verdict: A.")
    assert KEY not in text and "authorization': '[redacted]'" in text.lower()


def test_scrub_catches_header_values_in_any_spelling() -> None:
    for leaked in (
        f"Authorization: Bearer {KEY}",
        f'"authorization": "Bearer {KEY}"',
        f"x-api-key={KEY}",
        f"proxy-authorization: Basic {KEY}",
        f"sent bearer {KEY} upstream",
    ):
        assert KEY not in scrub(leaked), leaked
    assert scrub("no secrets here: Verdict: B") == "no secrets here: Verdict: B"
