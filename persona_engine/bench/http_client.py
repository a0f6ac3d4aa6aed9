"""A lean HTTP/1.1 load generator for ``persona bench serve``: keep-alive connections over asyncio
streams, JSON bodies, and just enough parsing of the answer (status, headers, a body of known
length).

Why not httpx alone: on this 2-core machine the load generator shares the cores with the server,
and httpx's client costs more CPU per request than the server spends answering it (measured: 1.33
against 1.08 ms), so the latencies it reports partly measure its own queue for the CPU. This client
costs a fraction of that; ``--client httpx`` keeps the old one for comparison. It speaks only to our
own server on loopback (no TLS, no redirects, no chunked bodies: uvicorn answers JSON with a
Content-Length).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit


class ClientError(Exception):
    """A request that got no complete answer (connection refused, reset or closed mid-answer)."""


@dataclass
class Answer:
    status_code: int
    headers: dict[str, str]  # names in lower case
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    async def request(self, head: bytes, body: bytes) -> Answer:
        self.writer.write(head + body)
        await self.writer.drain()
        status_line = await self.reader.readuntil(b"\r\n")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ClientError(f"not an HTTP/1.1 answer: {status_line[:80]!r}")
        headers: dict[str, str] = {}
        while True:
            line = await self.reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" not in headers:
            raise ClientError("an answer without Content-Length (chunked bodies are not read)")
        content = await self.reader.readexactly(int(headers["content-length"]))
        return Answer(int(parts[1]), headers, content)

    def close(self) -> None:
        self.writer.close()


class LeanClient:
    """``async with LeanClient(url, headers) as c: answer = await c.post(path, json=body)``.

    One keep-alive connection per request in flight (a pool that grows to the concurrency the
    caller uses); a connection that fails is dropped, and the error raised as :class:`ClientError`.
    """

    def __init__(self, base_url: str, headers: dict[str, str] | None = None, timeout: float = 60.0):
        url = urlsplit(base_url)
        if url.scheme != "http" or url.hostname is None:
            raise ValueError(f"LeanClient speaks plain http to a host: {base_url!r}")
        self.host, self.port = url.hostname, url.port or 80
        self.timeout = timeout
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._fixed = f"Host: {self.host}:{self.port}\r\n{extra}Content-Type: application/json\r\n"
        self._idle: list[_Connection] = []

    async def __aenter__(self) -> LeanClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()

    async def post(self, path: str, *, json: Any) -> Answer:
        body = _dumps(json)
        head = (f"POST {path} HTTP/1.1\r\n{self._fixed}Content-Length: {len(body)}\r\n\r\n").encode(
            "latin-1"
        )
        conn = self._idle.pop() if self._idle else None
        try:
            if conn is None:
                conn = _Connection(*await asyncio.open_connection(self.host, self.port))
            answer = await asyncio.wait_for(conn.request(head, body), self.timeout)
        except ClientError:
            conn.close()  # type: ignore[union-attr]  # raised by conn.request: conn is set
            raise
        except (OSError, EOFError, asyncio.TimeoutError, asyncio.LimitOverrunError) as e:
            if conn is not None:
                conn.close()
            raise ClientError(f"{type(e).__name__}: {e}") from None
        if answer.headers.get("connection", "").lower() == "close":
            conn.close()
        else:
            self._idle.append(conn)
        return answer


def _dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode("utf-8")
