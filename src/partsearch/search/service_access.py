"""Who may reach the HTTP service (`service.create_app` wires it in; `partsearch serve` listens):
the listening socket (`listen`), the Host names it answers to (`allowed_hosts`) and `RequestGuard`,
the middleware that checks Host, API key and body size before any route reads a body [ours].
"""

from __future__ import annotations

import secrets
import socket

from fastapi import HTTPException
from fastapi.responses import JSONResponse

from partsearch.errors import UserError

MAX_REQUEST_BYTES = 64 * 1024  # any request body but an upload's; a search is a sentence [ours]
MULTIPART_OVERHEAD = 64 * 1024  # an upload body may exceed the file by its multipart headers [ours]
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def host_name(header: str) -> str:
    """The name in a Host header, without the port: 'localhost:8000' -> 'localhost', '[::1]:80' -> '::1'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class RequestGuard:
    """ASGI middleware that decides before any route reads a body [ours]:

    - the Host header must name a host the server was started for (`allowed_hosts`; None accepts
      any), so a page on another site cannot reach a loopback server through DNS rebinding;
    - uploads and deletes need the API key, checked before a byte of the upload is read;
    - a body over the limit (an upload's `max_upload_bytes` plus multipart headers, any other
      request's MAX_REQUEST_BYTES) is 413: at once when Content-Length says so, otherwise as soon as
      the streamed body passes it.
    Every refusal is JSON `{"detail": message}`.
    """

    def __init__(self, app, allowed_hosts: tuple[str, ...] | None, api_key: str | None, max_upload_bytes: int):
        self.app = app
        self.allowed = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}
        self.api_key = api_key
        self.upload_limit = max_upload_bytes + MULTIPART_OVERHEAD

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self.refusal(headers, scope["method"], scope["path"])
        if refusal is not None:
            await JSONResponse({"detail": refusal[1]}, status_code=refusal[0])(scope, receive, send)
            return
        limit = _body_limit(scope["method"], scope["path"], self.upload_limit)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise HTTPException(413, f"request body is over the limit of {limit} bytes")
            return message

        await self.app(scope, limited_receive, send)

    def refusal(self, headers: dict[str, str], method: str, path: str) -> tuple[int, str] | None:
        """(status, message) of a request refused on its headers alone, or None."""
        host = headers.get("host", "")
        if self.allowed is not None and host_name(host) not in self.allowed:
            return 400, (f"Host {host!r} is not a name this server answers to ({', '.join(sorted(self.allowed))}); "
                         "start it with --allowed-host NAME")
        upload = _is_upload(method, path)
        case_write = method == "POST" and path.startswith("/api/cases/")
        if upload or case_write or (method == "DELETE" and path.startswith("/api/images/")):
            given = headers.get("x-api-key")
            if self.api_key is None:
                return 403, "uploads, deletes and case changes are off: start the server with --api-key KEY"
            if given is None or not secrets.compare_digest(given.encode(), self.api_key.encode()):
                return 401, "missing or wrong X-API-Key header"
        limit = _body_limit(method, path, self.upload_limit)
        length = headers.get("content-length", "0")
        if not length.isdigit() or int(length) > limit:
            return 413, f"request body of {length} bytes is over the limit of {limit} bytes"
        return None


def _is_upload(method: str, path: str) -> bool:
    return method == "POST" and path == "/api/images"


def _body_limit(method: str, path: str, upload_limit: int) -> int:
    """An upload or a search by photo may be as large as an upload; any other body is small."""
    return upload_limit if method == "POST" and path in ("/api/images", "/api/search/image") else MAX_REQUEST_BYTES


def allowed_hosts(bind: str, extra: list[str] | None) -> tuple[str, ...] | None:
    """The Host names to answer: loopback names, the bind address unless it is a wildcard, and
    `--allowed-host` names; '*' among them accepts any."""
    names = [*LOOPBACK_HOSTS, *([] if bind in ("0.0.0.0", "::", "") else [bind]), *(extra or [])]
    return None if "*" in names else tuple(dict.fromkeys(names))


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, taken before the model is loaded, so a busy port is one
    clear error at once (and nothing claims to be serving)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as err:
        raise UserError(f"--host {host!r}: not an address to listen on ({err})") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as err:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {err.strerror or err}; choose another --port "
                        "(or stop what is using it)") from None
    return sock
