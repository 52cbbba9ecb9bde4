"""The HTTP face of `ScoringService`: a FastAPI app (`create_app`) and `serve`, which runs it with uvicorn.

FastAPI on uvicorn: the most used ASGI stack in Python, already installed with gradio (the demo Space), with
multipart parsing through python-multipart and a server that drains its connections on SIGTERM.

    POST /score      an image as the body, or multipart/form-data with one or more files
    GET  /healthz    the process answers;  GET /readyz: the model is loaded and the service takes requests
    GET  /metrics    Prometheus text;      GET /: a short usage page
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import socket
import time
from collections.abc import AsyncIterator, Callable

from ..errors import OptionError
from .service import RequestRejected, ScoringService

try:
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser
    from starlette.requests import ClientDisconnect
except ImportError as error:  # pragma: no cover - the message is the point
    raise ImportError(f"metaqap_hf.serving needs FastAPI and uvicorn: pip install 'metaqap-hf[serve]' ({error})") from None

__all__ = ["SCORE_QUERY_OPTIONS", "create_app", "serve"]

# The query options of POST /score. `faults` asks for the fault head's output (refused by models without one).
SCORE_QUERY_OPTIONS = {"faults": "true/false: also return the fault head's output"}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")
_BODY_NAME = "<request body>"


def _score_options(query) -> dict[str, bool]:
    unknown = sorted(set(query) - set(SCORE_QUERY_OPTIONS))
    if unknown:
        raise RequestRejected(400, f"unknown query option(s) {unknown}; accepted: {sorted(SCORE_QUERY_OPTIONS)}",
                              reason="bad_request")
    faults = query.get("faults", "").lower()
    if faults not in _TRUE + _FALSE:
        raise RequestRejected(400, f"faults={query['faults']!r}: accepted: true or false", reason="bad_request")
    return {"faults": faults in _TRUE}


async def _read_body(request: Request, limit: int, seconds: float) -> bytes:
    """The whole body within `limit` bytes and `seconds`, or `RequestRejected` (413, 408, or 499 for a client that
    went away)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestRejected(413, f"the body of {declared} bytes is over this service's limit of {limit} bytes",
                              reason="body_too_large")
    body = bytearray()

    async def read() -> None:
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > limit:
                raise RequestRejected(413, f"the body is over this service's limit of {limit} bytes",
                                      reason="body_too_large")

    try:
        await asyncio.wait_for(read(), max(seconds, 0))
    except TimeoutError:
        raise RequestRejected(408, f"the request body did not arrive within {seconds:.3g} s",
                              reason="body_timeout") from None
    except ClientDisconnect:
        raise RequestRejected(499, "the client disconnected before sending its body", reason="disconnected") from None
    return bytes(body)


async def _multipart_images(request: Request, body: bytes, max_files: int) -> list[tuple[str, bytes | None]]:
    """(name, bytes) of each file of a multipart body, in order; a plain form field is (name, None)."""
    async def stream() -> AsyncIterator[bytes]:
        yield body

    try:
        form = await MultiPartParser(request.headers, stream(), max_files=max_files, max_fields=max_files).parse()
    except MultiPartException as error:
        raise RequestRejected(400, f"unreadable multipart body: {error.message}", reason="bad_request") from None
    images = []
    try:
        for field, value in form.multi_items():
            if isinstance(value, UploadFile):
                images.append((value.filename or field, await value.read()))
            else:
                images.append((field, None))
    finally:
        await form.close()
    if not images:
        raise RequestRejected(400, "the multipart body holds no files", reason="bad_request")
    return images


def _rejection_response(error: RequestRejected) -> JSONResponse:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else None
    return JSONResponse({"error": error.message}, status_code=error.status, headers=headers)


def _usage_page(service: ScoringService) -> str:
    about = service.description
    limits = service.limits
    rows = "".join(f"<li><code>{html.escape(name)}</code>: {html.escape(str(value))}</li>"
                   for name, value in {**about, "max_batch": limits.max_batch, "max_wait_ms": limits.max_wait_ms,
                                       "max_body_bytes": limits.max_body_bytes, "max_files": limits.max_files,
                                       "max_pixels": limits.max_pixels, "timeout (s)": limits.timeout}.items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>metaqap serve</title></head><body>
<h1>MetaQAP image quality</h1>
<p>No-reference quality scores on the model's MOS scale (higher is better).</p>
<pre>curl --data-binary @photo.jpg http://HOST:PORT/score
curl -F file=@a.jpg -F file=@b.png http://HOST:PORT/score</pre>
<p>Each result: <code>name</code>, <code>score</code> (clipped to the MOS range), <code>raw_score</code>,
<code>base_scores</code>, <code>std</code>; or <code>name</code> and <code>error</code> for an image that cannot be
scored (the others are scored). 200 when an image was scored, 422 when none could be; 413 body too large, 408 body
too slow, 503 busy or shutting down (with Retry-After).</p>
<p><a href="/healthz">/healthz</a> <a href="/readyz">/readyz</a> <a href="/metrics">/metrics</a></p>
<ul>{rows}</ul></body></html>"""


def create_app(service: ScoringService | Callable[[], ScoringService], *,
               on_ready: Callable[[], None] | None = None) -> FastAPI:
    """A FastAPI app that serves `service`, or the service that `service()` builds when the app starts (so the app
    can be shipped to another process, e.g. a Ray Serve replica, before any model is loaded). Its lifespan starts
    and stops the service (stopping scores every accepted request first); `on_ready` is called once the service
    takes requests."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        running = service if isinstance(service, ScoringService) else service()
        app.state.service = running
        await running.start()
        if on_ready is not None:
            on_ready()
        try:
            yield
        finally:
            await running.stop()

    app = FastAPI(title="metaqap serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", response_class=HTMLResponse)
    async def usage(request: Request) -> str:
        return _usage_page(request.app.state.service)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        running: ScoringService = request.app.state.service
        if running.ready:
            return JSONResponse({"status": "ready", **running.description})
        return JSONResponse({"status": "draining" if running.draining else "starting"}, status_code=503,
                            headers={"Retry-After": str(running.limits.retry_after)})

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.app.state.service.render_metrics(), media_type="text/plain; version=0.0.4")

    @app.post("/score")
    async def score(request: Request) -> JSONResponse:
        return await _score(request, request.app.state.service)

    return app


async def _score(request: Request, service: ScoringService) -> JSONResponse:
    started = time.monotonic()
    limits = service.limits
    status = 500
    try:
        options = _score_options(request.query_params)
        with service.admission():
            body = await _read_body(request, limits.max_body_bytes, limits.timeout)
            if request.headers.get("content-type", "").startswith("multipart/form-data"):
                images = await _multipart_images(request, body, limits.max_files)
            else:
                images = [(_BODY_NAME, body)]
            files = [(name, data) for name, data in images if data is not None]
            remaining = limits.timeout - (time.monotonic() - started)
            try:
                scored = iter(await asyncio.wait_for(service.score_images(files, **options), max(remaining, 0)))
            except TimeoutError:
                raise RequestRejected(503, f"not scored within this service's timeout of {limits.timeout:g} s; "
                                           "retry later", reason="timeout", retry_after=limits.retry_after) from None
        results = [next(scored) if data is not None else {"name": name, "error": "a form field, not a file"}
                   for name, data in images]
        count = sum("score" in result for result in results)
        status = 200 if count else 422
        return JSONResponse({"results": results, "scored": count, "skipped": len(results) - count},
                            status_code=status)
    except RequestRejected as error:
        status = error.status
        if error.reason not in ("queue_full", "unavailable"):  # those two were counted on refusal
            service.metrics.rejected(error.reason)
        return _rejection_response(error)
    except OptionError as error:
        status = 400
        return JSONResponse({"error": str(error)}, status_code=status)
    finally:
        service.metrics.request_done(status, time.monotonic() - started)


class _DrainingServer(uvicorn.Server):
    """uvicorn's server that, on SIGTERM or Ctrl-C, first marks the service draining (/readyz answers 503, new
    requests 503) and then shuts down as uvicorn does: no new connections, accepted requests finished."""

    def __init__(self, config: uvicorn.Config, service: ScoringService):
        super().__init__(config)
        self.service = service

    def handle_exit(self, sig, frame) -> None:
        self.service.drain()
        super().handle_exit(sig, frame)


def serve(service: ScoringService, *, host: str = "127.0.0.1", port: int = 8000, shutdown_timeout: float = 60.0,
          log_level: str = "warning", on_ready: Callable[[str], None] | None = None) -> None:
    """Serve `service` over HTTP on `host`:`port` (0: a free port) until SIGTERM or Ctrl-C, then finish the
    accepted requests (for at most `shutdown_timeout` seconds) and return. `on_ready(url)` is called once it takes
    requests."""
    try:
        listener = socket.create_server((host, port))
    except OSError as error:
        raise OptionError("port", port, f"cannot listen on {host}:{port} ({error.strerror or error})") from None
    bound_host, bound_port = listener.getsockname()[:2]
    url = f"http://{f'[{bound_host}]' if ':' in bound_host else bound_host}:{bound_port}"
    app = create_app(service, on_ready=None if on_ready is None else lambda: on_ready(url))
    config = uvicorn.Config(app, log_level=log_level, lifespan="on", timeout_graceful_shutdown=shutdown_timeout,
                            access_log=False)
    with listener:
        _DrainingServer(config, service).run(sockets=[listener])
