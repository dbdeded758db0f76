"""A client certificate from another CA gets a TLS alert at once, not a bare EOF (which kubectl
retries for most of a minute)."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from pathlib import Path

import pytest

from edgekube._cogs import tlsalert
from edgekube.api import pki

NOW = datetime.datetime.now(datetime.UTC)


async def _exchange(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> bytes:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"ok\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx, server_hostname="localhost")
        writer.write(b"hello\n")
        try:
            return await reader.readline()
        finally:
            writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_a_foreign_client_certificate_gets_an_unknown_ca_alert(tmp_path: Path) -> None:
    assert tlsalert.install()
    ours = pki.ensure_pki(tmp_path / "ours", hostnames=[], addresses=[], now=NOW)
    theirs = pki.ensure_pki(tmp_path / "theirs", hostnames=[], addresses=[], now=NOW)
    server_ctx = pki.server_ssl_context(ours)

    def client(creds: pki.Pki) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(ours.ca_cert))
        ctx.load_cert_chain(creds.admin_cert, creds.admin_key)
        return ctx

    assert await _exchange(server_ctx, client(ours)) == b"ok\n"
    with pytest.raises(ssl.SSLError, match="UNKNOWN_CA"):
        await _exchange(server_ctx, client(theirs))
