"""The sandbox server: the Scenario REST API on loopback, plus a second origin serving signed asset URLs.

Job states are derived lazily from the clock (no thread per job, `_state`), faults are seeded, and every request
is logged so tests can check what a client really sent. What each route answers is in the table of `_routes`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

from . import _media
from ._common import ApiError
from ._routes import ROUTES
from ._routing import Request


class Drop(Exception):
    """Close the connection without answering."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, sandbox, handler) -> None:
        self.sandbox = sandbox
        super().__init__(("127.0.0.1", sandbox.options["port"] if handler is ApiHandler else 0), handler)

    def handle_error(self, request, client_address) -> None:
        """A client that gave up (its read timeout) closes the socket before the answer: not worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the client's delayed ACK adds 40 ms to every answer.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, payload: Any, headers: Optional[dict] = None, raw: Optional[bytes] = None,
              content_type: str = "application/json") -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(2)
        except OSError:
            pass


XML = "application/xml"


class CdnHandler(_Handler):
    """The asset origin: checks the URL's signature and expiry, never an Authorization header."""

    def do_GET(self) -> None:
        sandbox = self.server.sandbox
        state = sandbox.state
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with state.lock:
            state.cdn_requests.append({"time": state.clock(), "method": "GET", "path": parts.path, "query": query,
                                       "authorization": "Authorization" in self.headers})
        asset_id = parts.path.rsplit("/", 1)[-1].split(".")[0]
        asset = state.assets.get(asset_id)
        expired = False
        with state.lock:
            if state.expire_next > 0:
                state.expire_next -= 1
                expired = True
        if asset is None or expired or not state.check_signature(asset_id, query):
            body = b"<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>Request has expired or " \
                   b"the signature does not match</Message></Error>"
            return self._send(403, None, raw=body, content_type=XML)
        fault = state.take_fault("GET", parts.path, ("corrupt_image", "cdn_rate_limit"))
        if fault and fault["kind"] == "cdn_rate_limit":  # the origin throttling: XML, Retry-After if given one
            wait = fault.get("retry_after")
            with state.lock:
                state.rate_limited.append({"time": state.clock(), "header": bool(wait),
                                           "retry_after": float(wait or 0), "path": parts.path})
            return self._send(429, None, {"Retry-After": f"{float(wait):g}"} if wait else None, content_type=XML,
                              raw=b"<?xml version='1.0'?><Error><Code>SlowDown</Code><Message>Please reduce your "
                                  b"request rate</Message></Error>")
        corrupt = fault is not None
        data = state.image_bytes(asset)
        mime = asset.get("mime") or _media.MIME[asset.get("kind", "image")]
        self._send(200, None, raw=data[: len(data) // 3] if corrupt else data, content_type=mime)


class ApiHandler(_Handler):
    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        sandbox = self.server.sandbox
        state = sandbox.state
        parts = urlsplit(self.path)
        path = parts.path
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        now = state.clock()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        with state.lock:  # the body's digest: a test can tell a request sent again from another one
            state.requests.append({"time": now, "method": method, "path": path, "query": query,
                                   "authorization": "Authorization" in self.headers,
                                   "body_sha256": hashlib.sha256(raw).hexdigest()})
            if method == "POST" and path.startswith("/v1/generate/custom/"):
                state.generate_posts += 1
        fault = None if path.startswith("/v1/_sandbox") else state.take_fault(  # its own routes: never
            method, path, ("rate_limit", "error_5xx", "drop", "slow", "malformed", "hold"), query)
        creates = method in ("POST", "PUT") and ("/generate/custom/" in path or path.endswith("/run"))
        # After the request did its work, or before? Job creations: `after_create` (drawn for seeded faults);
        # other requests (models, uploads, captions, starting a training): before, unless injected with
        # `after_create=True` (the answer is lost after the server acted: the training started, the caption
        # was made and charged).
        after = fault is not None and (fault.get("after_create", fault["kind"] in ("slow", "malformed")) if creates
                                 else bool(fault.get("injected") and fault.get("after_create")))
        try:
            if fault and fault["kind"] == "rate_limit":
                extra = {"actionName": "parallelCustomJobs", "actionLimit": sandbox.options["max_parallel_jobs"]}
                if path.endswith("/train"):
                    extra = {"actionName": "parallel-training",
                             "actionLimit": sandbox.options["max_parallel_trainings"]}
                if fault.get("remaining_seconds") is not None:
                    extra = {"remainingSeconds": float(fault["remaining_seconds"])}  # a cooldown 429
                wait = fault.get("retry_after")
                if wait is None and sandbox.options["retry_after_header"]:
                    wait = 1.0
                raise ApiError(429, "Too many requests", {"Retry-After": f"{float(wait):g}"} if wait else {}, **extra)
            if fault and not after:
                if fault["kind"] == "drop":
                    raise Drop()
                if fault["kind"] == "error_5xx":
                    raise ApiError(500, "Internal server error")
                if fault["kind"] == "slow":
                    time.sleep(float(fault.get("seconds", 2.0)))
            status, payload, headers = self._route(method, path, query, raw)
            if fault and fault["kind"] == "hold":  # acted on (a job or training created), the answer held
                state.hold(method, path, query, float(fault.get("seconds", 60.0)))
            if fault and fault["kind"] == "drop":
                raise Drop()
            if fault and fault["kind"] == "error_5xx":
                raise ApiError(502, "Bad gateway")
            if fault and fault["kind"] == "slow" and after:  # not twice
                time.sleep(float(fault.get("seconds", 2.0)))
            if fault and fault["kind"] == "malformed":
                return self._send(200, None, raw=b'{"job": {"jobId": "job_', content_type="application/json")
            self._send(status, payload, headers)
        except Drop:
            self._drop()
        except ApiError as exc:
            if exc.status == 429:  # retry_after 0: no header, so nothing was promised
                with state.lock:
                    state.rate_limited.append({"time": state.clock(), "header": "Retry-After" in exc.headers,
                                               "retry_after": float(exc.headers.get("Retry-After", 0)),
                                               "path": path})
            self._send(exc.status, {"reason": exc.reason, **exc.extra}, exc.headers)

    # -- routes --
    def _authorized(self, method: str, public: bool) -> None:
        sandbox = self.server.sandbox
        header = self.headers.get("Authorization", "")
        if header == "public-auth-token" and method == "GET" and public:
            return
        expected = base64.b64encode(f"{sandbox.api_key}:{sandbox.api_secret}".encode()).decode()
        if header.startswith("Basic ") and hmac.compare_digest(header[6:].strip(), expected):
            return
        if header.startswith("Bearer ") and hmac.compare_digest(header[7:].strip(), sandbox.api_secret):
            return
        raise ApiError(401, "Unauthorized")

    def _route(self, method: str, path: str, query: dict, raw: bytes) -> tuple[int, Any, dict]:
        sandbox = self.server.sandbox
        state = sandbox.state
        if not path.startswith("/v1/"):
            raise ApiError(404, f"Route {method} {path} not found")
        parts = path[4:].strip("/").split("/")
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            raise ApiError(400, "Body is not valid JSON") from None
        head = parts[0]
        public = (head == "models" and (query.get("privacy") == "public" or (len(parts) > 1 and state.models.get(
            parts[1], {}).get("privacy") == "public"))) or head == "assets"
        self._authorized(method, public)
        found = ROUTES.find(method, parts)
        if found is None:
            raise ApiError(404, f"Route {method} {path} not found")
        handler, params = found
        status, payload = handler(Request(sandbox, method, path, params, query, body, state.clock()))
        return status, payload, {}
