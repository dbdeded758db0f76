"""A real admission webhook server for tests: HTTPS (aiohttp) on 127.0.0.1 with a certificate from
a CA of its own (edgekube's own PKI code, in a temporary dir), answering AdmissionReviews with
what the test's `decide` says and recording every review it got."""

from __future__ import annotations

import asyncio
import base64
import datetime
import ssl
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from edgekube.api import pki

JSON = dict[str, Any]
Decide = Callable[[JSON], JSON]  # the AdmissionReview's request -> the response's fields (uid added)


class WebhookServer:
    def __init__(self, tls_dir: Path, *, decide: Decide, hostnames: tuple[str, ...] = ("hook.hooks.svc",),
                 delay: float = 0.0, routes: Mapping[str, Decide] | None = None) -> None:
        self.pki = pki.ensure_pki(tls_dir, hostnames=list(hostnames), addresses=["127.0.0.1"],
                                  now=datetime.datetime.now(datetime.UTC))
        self.decide = decide
        self.routes = dict(routes or {})  # a URL path's own `decide` (several webhooks, one server)
        self.delay = delay
        self.reviews: list[JSON] = []
        self.paths: list[str] = []  # the URL path of each review, in the same order
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def ca_bundle(self) -> str:
        return base64.b64encode(self.pki.ca_cert.read_bytes()).decode()

    def url(self, path: str = "/hook") -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        review = orjson.loads(await request.read())
        self.paths.append(request.path)
        self.reviews.append(review)
        if self.delay:
            await asyncio.sleep(self.delay)
        decide = self.routes.get(request.path, self.decide)
        answer = {"uid": review["request"]["uid"], **decide(review["request"])}
        return web.Response(body=orjson.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                               "response": answer}), content_type="application/json")

    async def start(self) -> WebhookServer:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.pki.server_cert, self.pki.server_key)
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def patch_response(ops: list[JSON]) -> JSON:
    return {"allowed": True, "patchType": "JSONPatch", "patch": base64.b64encode(orjson.dumps(ops)).decode()}


class Threaded:
    """A `WebhookServer` on an event loop of its own in a thread: for tests that drive kubectl
    synchronously while the API server (another process) calls the webhook."""

    def __init__(self, server: WebhookServer) -> None:
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="webhook-server", daemon=True)

    def __enter__(self) -> WebhookServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(10)
        return self.server

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def _main() -> None:
    """`python -m tests.support.webhook --tls DIR --port N`: a webhook server as a process of its
    own (started inside a network namespace by the tests that need one), refusing objects named
    `bad` and allowing the rest."""
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--tls", type=Path, required=True)
    ap.add_argument("--host", default="0.0.0.0")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()

    def decide(req: JSON) -> JSON:
        if (req.get("object") or {}).get("metadata", {}).get("name") == "bad":
            return {"allowed": False, "status": {"code": 403, "reason": "Forbidden", "message": "refused from the outside"}}
        return {"allowed": True}

    async def serve() -> None:
        server = WebhookServer(args.tls, decide=decide)
        app = web.Application()
        app.router.add_post("/{tail:.*}", server._handle)
        runner = web.AppRunner(app)
        await runner.setup()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(server.pki.server_cert, server.pki.server_key)
        await web.TCPSite(runner, args.host, args.port, ssl_context=context).start()
        print("serving", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    _main()
