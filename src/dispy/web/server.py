"""The web server both web tools share: aiohttp, safe by default.

- Bound to localhost unless told otherwise; then the Host header must name localhost
  (a page on another site cannot reach it through DNS rebinding).
- Bound to any other address it needs a login token, printed at start (as Jupyter
  does): ``?token=...`` once, then a cookie.
- Every request that changes something must be JSON sent from a page of this server
  (Origin or Referer of this very origin): another site cannot make a browser post to it.
- Files are served only by plain name from one folder (the package's own ``static``).
- TLS when a certificate is given.
- Live updates go out as server-sent events: one stream per open page, pushed when
  something changed, instead of pages polling.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import secrets
import ssl
import sys
import threading
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from ..eventloop import within

log = logging.getLogger("dispy.web")

STATIC = Path(__file__).resolve().parent / "static"
LOCAL_HOSTS = frozenset(("localhost", "127.0.0.1", "::1"))
_NAME = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.(html|js|css|png|svg|ico)$")
_TYPES = {"html": "text/html", "js": "text/javascript", "css": "text/css",
          "png": "image/png", "svg": "image/svg+xml", "ico": "image/x-icon"}
_SAFE_METHODS = frozenset(("GET", "HEAD"))
#: Content security policy: scripts, styles and connections only from this server.
_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self';"
        " connect-src 'self'; frame-ancestors 'none'")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def bind_host(host: str | None) -> str:
    """'' or None means localhost (the original bound all interfaces: see README)."""
    return host if host else "127.0.0.1"


def is_local(host: str) -> bool:
    """Only this machine can connect (other 127.x addresses count as elsewhere)."""
    return host in LOCAL_HOSTS


def tls_context(certfile: str | None, keyfile: str | None) -> ssl.SSLContext | None:
    if not certfile:
        if keyfile:
            raise ValueError("keyfile needs certfile")
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile, keyfile or None)
    return ctx


class EventHub:
    """Server-sent event streams of the open pages; each gets every published event."""

    def __init__(self) -> None:
        self.queues: set[asyncio.Queue] = set()

    def publish(self, event: str, data: Any) -> None:
        msg = f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
        for q in list(self.queues):
            if q.qsize() > 50:  # a page that stopped reading: drop it, it reconnects
                self.queues.discard(q)
                q.put_nowait(None)
            else:
                q.put_nowait(msg)

    def close(self) -> None:
        for q in self.queues:
            q.put_nowait(None)
        self.queues.clear()

    async def stream(self, request: web.Request, first: list[tuple[str, Any]]
                     ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
        await resp.prepare(request)
        q: asyncio.Queue = asyncio.Queue()
        self.queues.add(q)
        try:
            for event, data in first:
                await resp.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
            while True:
                try:
                    msg = await within(q.get(), 15)
                except asyncio.TimeoutError:
                    msg = b": keepalive\n\n"
                if msg is None:
                    break
                await resp.write(msg)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.queues.discard(q)
        return resp


class WebServer:
    """An aiohttp application with the rules above; ``pages`` maps paths to file names."""

    def __init__(self, name: str, host: str | None, port: int, pages: dict[str, str],
                 keyfile: str | None = None, certfile: str | None = None,
                 document_root: str | Path | None = None) -> None:
        self.name = name
        self.host = bind_host(host)
        self.port = int(port)
        self.pages = pages
        self.root = Path(document_root).resolve() if document_root else STATIC
        if not self.root.is_dir():
            raise ValueError(f"{name}: DocumentRoot {self.root} is not a directory")
        self.ssl = tls_context(certfile, keyfile)
        self.scheme = "https" if self.ssl else "http"
        #: the login token; None when bound to localhost (only this machine can connect)
        self.token: str | None = None if is_local(self.host) else secrets.token_urlsafe(24)
        self.cookie = f"dispy_token_{self.port}"
        self.hub = EventHub()
        self.app = web.Application(middlewares=[self._guard], client_max_size=1 << 20)
        self.app.router.add_get("/", self._page)
        self.app.router.add_get("/{name}", self._page)
        self.runner: web.AppRunner | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None

    # ---- routes -----------------------------------------------------------------

    def get(self, path: str, handler: Handler) -> None:
        self.app.router.add_get(path, handler)

    def post(self, path: str, handler: Callable[[dict], Awaitable[Any]]) -> None:
        """A state-changing JSON request: ``handler(body)`` returns the JSON answer."""

        async def wrapped(request: web.Request) -> web.Response:
            try:
                body = await request.json()
            except (ValueError, UnicodeDecodeError):
                return _error(400, "the request body must be a JSON object")
            if not isinstance(body, dict):
                return _error(400, "the request body must be a JSON object")
            try:
                answer = await handler(body)
            except (ValueError, TypeError, KeyError) as exc:
                return _error(400, str(exc) or exc.__class__.__name__)
            return web.json_response(answer)

        self.app.router.add_post(path, wrapped)

    async def _page(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("name", "")
        name = self.pages.get(name, name)
        path = self._static_file(name)
        if path is None:
            raise web.HTTPNotFound(text="not found")
        ext = path.suffix[1:]
        return web.Response(body=path.read_bytes(), content_type=_TYPES[ext],
                            charset="utf-8" if ext in ("html", "js", "css", "svg") else None)

    def _static_file(self, name: str) -> Path | None:
        """The file of that plain name in the document root, or None (no paths, no dots)."""
        if not _NAME.match(name):
            return None
        path = (self.root / name).resolve()
        if path.parent != self.root or not path.is_file():
            return None
        return path

    # ---- the rules ----------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.token is None and not is_local(_host_name(request.host)):
            return _error(403, f"{self.name} answers only to localhost (Host header"
                               f" {request.host!r})")
        if self.token is not None:
            given = request.query.get("token")
            if given is not None and hmac.compare_digest(given, self.token):
                if request.method == "GET" and request.path != "/events":
                    # the token goes into a cookie and out of the address bar
                    query = {k: v for k, v in request.query.items() if k != "token"}
                    found = web.HTTPFound(request.rel_url.with_query(query))
                    self._set_cookie(found)
                    raise found
            elif not hmac.compare_digest(request.cookies.get(self.cookie, ""), self.token):
                return _error(401, f"{self.name}: log in with the address printed at start"
                                   " (it ends with ?token=...)")
        if request.method not in _SAFE_METHODS:
            if not self._same_origin(request):
                return _error(403, "refused: the request does not come from this server's"
                                   " own page (cross-site request)")
            if request.content_type != "application/json":
                return _error(415, "requests must be JSON")
        resp = await handler(request)
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault("Content-Security-Policy", _CSP)
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        return resp

    def _set_cookie(self, resp: web.StreamResponse) -> None:
        assert self.token is not None
        resp.set_cookie(self.cookie, self.token, httponly=True, samesite="Strict",
                        secure=self.ssl is not None, path="/")

    def _same_origin(self, request: web.Request) -> bool:
        own = f"{self.scheme}://{request.host}"
        origin = request.headers.get("Origin")
        if origin is not None:
            return origin == own
        referer = request.headers.get("Referer", "")
        return referer == own or referer.startswith(own + "/")

    # ---- running ------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on the current loop; OSError when the port is taken."""
        self.loop = asyncio.get_running_loop()
        self.app.on_shutdown.append(self._close_streams)
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                                    shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port, ssl_context=self.ssl)
        try:
            await site.start()
        except OSError:
            await self.runner.cleanup()
            raise
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]

    async def _close_streams(self, app: web.Application) -> None:
        self.hub.close()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def start_thread(self, on_loop: Callable[[], Awaitable[None]] | None = None) -> None:
        """Serve from a thread of its own (dispy.httpd in a user's program)."""
        ready = threading.Event()
        error: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)

            async def begin() -> None:
                await self.start()
                if on_loop is not None:
                    await on_loop()

            try:
                loop.run_until_complete(begin())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                error.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()

        self.thread = threading.Thread(target=run, name=f"{self.name}-web", daemon=True)
        self.thread.start()
        ready.wait()
        if error:
            raise error[0]

    def stop_thread(self) -> None:
        if self.thread is None or self.loop is None:
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if self.thread.is_alive():  # say where it hangs, never silently
            frame = sys._current_frames().get(self.thread.ident or 0)
            where = "".join(traceback.format_stack(frame)) if frame is not None else "?"
            log.warning("%s: its web thread did not stop within 10 s; it is at:\n%s",
                        self.name, where)
        self.thread = None

    @property
    def url(self) -> str:
        host = "localhost" if is_local(self.host) else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"{self.scheme}://{host}:{self.port}/"

    def login_url(self) -> str:
        """The address to open: with the token when one is needed."""
        return self.url + (f"?token={self.token}" if self.token else "")

    def announce(self) -> None:
        """Say where to point a browser (on stdout, like Jupyter)."""
        if self.host in ("0.0.0.0", "::"):
            where = "every interface"
        else:
            where = self.host
        print(f"{self.name}: serving on {where} port {self.port}; open {self.login_url()}",
              flush=True)


def _host_name(host: str) -> str:
    """The name part of a Host header ('[::1]:8181' -> '::1')."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _error(status: int, text: str) -> web.Response:
    return web.json_response({"error": text}, status=status)
