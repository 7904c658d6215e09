"""A small real HTTP(S) receiver for outbound calls (webhooks, chat alerts): it records what
arrived on the wire, TLS SNI included, and answers by path."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field

import trustme

from workflows.outbound import MAX_RESPONSE_BYTES

REASONS = {200: "OK", 302: "Found", 404: "Not Found", 408: "Request Timeout", 425: "Too Early"}


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes


@dataclass
class Server:
    """A small HTTP/1.1 server (HTTPS when given a context) answering by path, one request per
    connection: ``/ok``; ``/status/<code>``; ``/slow`` answers only after the client hangs up."""

    tls: ssl.SSLContext | None
    received: list[Received] = field(default_factory=list)
    #: paths answered 200 with these bytes (a certificate, a confirmation page)
    files: dict[str, bytes] = field(default_factory=dict)
    sni: list[str | None] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> Server:
        if self.tls is not None:
            self.tls.sni_callback = lambda _obj, name, _ctx: self.sni.append(name)
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await asyncio.gather(*self._handlers)
        await self._server.wait_closed()

    def url(self, path: str, host: str = "localhost") -> str:
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            async with asyncio.timeout(10):
                await self._answer(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client hung up (timeout tests, TLS refusals, a capped read)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *lines = head.rstrip("\r\n").split("\r\n")
        method, path, _version = request_line.split(" ")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.received.append(Received(method, path, headers, body))

        status, extra, content = 200, "", b'{"received":true}'
        if path == "/slow":
            await reader.read(1)  # returns once the client gives up and closes
            return
        if path.startswith("/status/"):
            status = int(path.removeprefix("/status/"))
            content = f"nope {status}\n\tline two".encode()
            if status == 302:
                extra = "Location: https://169.254.169.254/latest/meta-data/\r\n"
        if path in self.files:
            content = self.files[path]
        if path == "/big":
            status, content = 404, b"x" * (16 * MAX_RESPONSE_BYTES)
        writer.write(
            f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\n{extra}"
            f"Content-Length: {len(content)}\r\nConnection: close\r\n\r\n".encode()
            + content
        )
        await writer.drain()


async def start_server(ca: trustme.CA, *names: str) -> Server:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return await Server(context).start()
