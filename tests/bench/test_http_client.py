"""The lean load generator of `persona bench serve`: what it sends, what it reads back, keep-alive,
and a clear error (never a hang or a wrong answer) when the server breaks off."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from persona_engine.bench.http_client import ClientError, LeanClient


async def _serve(answer: bytes | None, seen: list[Any]) -> asyncio.Server:
    """A one-route server: records (connection number, head, body) of each request and answers
    ``answer`` (None: an echo of the body with a Server-Timing header)."""
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        me = connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                body = await reader.readexactly(length)
                seen.append((me, head.decode(), json.loads(body)))
                if answer is None:
                    out = b'{"echo":' + body + b"}"
                    writer.write(
                        b"HTTP/1.1 201 Created\r\nServer-Timing: app;dur=1.5\r\n"
                        + f"Content-Length: {len(out)}\r\n\r\n".encode()
                        + out
                    )
                else:
                    writer.write(answer)
                    await writer.drain()
                    writer.close()
                    return
                await writer.drain()
        except asyncio.IncompleteReadError:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def _run(answer: bytes | None, bodies: list[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
    async def main() -> tuple[list[Any], list[Any]]:
        seen: list[Any] = []
        server = await _serve(answer, seen)
        port = server.sockets[0].getsockname()[1]
        answers: list[Any] = []
        async with server, LeanClient(f"http://127.0.0.1:{port}", {"X-API-Key": "k"}) as client:
            for body in bodies:
                try:
                    answers.append(await client.post("/v1/x", json=body))
                except ClientError as e:
                    answers.append(e)
        return seen, answers

    return asyncio.run(main())


def test_posts_json_reads_the_answer_and_keeps_the_connection() -> None:
    seen, answers = _run(None, [{"a": 1}, {"b": "é"}])
    assert [s[2] for s in seen] == [{"a": 1}, {"b": "é"}]
    assert [s[0] for s in seen] == [1, 1]  # one connection, kept alive
    assert seen[0][1].startswith("POST /v1/x HTTP/1.1\r\n") and "X-API-Key: k\r\n" in seen[0][1]
    assert [a.status_code for a in answers] == [201, 201]
    assert answers[1].json() == {"echo": {"b": "é"}}
    assert answers[0].headers["server-timing"] == "app;dur=1.5"


@pytest.mark.parametrize(
    "answer, message",
    [
        (b'HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{"cut":', "IncompleteReadError"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "Content-Length"),
        (b"SSH-2.0-OpenSSH\r\n", "not an HTTP/1.1 answer"),
    ],
)
def test_a_broken_answer_is_a_client_error_and_the_next_request_reconnects(
    answer: bytes, message: str
) -> None:
    seen, answers = _run(answer, [{"n": 1}, {"n": 2}])
    assert all(isinstance(a, ClientError) for a in answers)
    assert message in str(answers[0])
    assert [s[0] for s in seen] == [1, 2]  # the broken connection was not reused
