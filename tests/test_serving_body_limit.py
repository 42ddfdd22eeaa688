"""An oversized request body gets its 413 and message over real HTTP, however the client sends it: the server
reads and drops the rest of the body before answering, so the client is not reset while still sending."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from serving import process

LIMIT = 64 * 1024
BIG = b"x" * (16 << 20)  # far more than the socket buffers take in: an unread rest is reset, not absorbed


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A server with no model yet: the 413 must come before any model lookup (a 404 would end the same way)."""
    with process.local_server(tmp_path_factory.mktemp("empty"), "--max-body-bytes", str(LIMIT)) as url:
        parts = urlsplit(url)
        yield parts.hostname, parts.port


def post(address: tuple[str, int], body, headers: dict[str, str]) -> tuple[int, dict]:
    connection = http.client.HTTPConnection(*address, timeout=60)
    try:
        connection.request("POST", "/v1/models/credit_risk:predict", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.mark.parametrize("connection", ["close", "keep-alive"])
def test_a_declared_oversized_body_gets_413_and_its_message(address, connection: str) -> None:
    status, body = post(address, BIG, {"Content-Type": "application/json", "Connection": connection})
    assert status == 413
    assert body["error"] == f"Request body of {len(BIG)} bytes exceeds the limit of {LIMIT} bytes"


def test_a_chunked_oversized_body_gets_413_and_its_message(address) -> None:
    chunks = (BIG[i : i + (1 << 20)] for i in range(0, len(BIG), 1 << 20))
    status, body = post(address, chunks, {"Connection": "close"})  # no length: sent chunked
    assert (status, body["error"]) == (413, f"Request body exceeds the limit of {LIMIT} bytes")


def test_a_client_expecting_100_continue_gets_413_before_sending(address) -> None:
    with socket.create_connection(address, timeout=30) as sock:
        head = (
            "POST /v1/models/credit_risk:predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(BIG)}\r\nExpect: 100-continue\r\n\r\n"
        )
        sock.sendall(head.encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large"
    assert b"exceeds the limit" in rest and b"connection: close" in rest.lower()


def test_a_body_within_the_limit_is_still_read(address) -> None:
    status, body = post(address, json.dumps({"instances": [{"person_age": 30}]}), {"Content-Type": "application/json"})
    assert status == 404 and "Servable not found" in body["error"]  # no model: the body was read, then the lookup
