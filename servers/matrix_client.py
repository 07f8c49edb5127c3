"""A small synchronous Matrix client: just what the demo and the end-to-end tests need.

Plain `http.client`, one connection per request, so a server that fails or goes away in the
middle of a test never leaves a half-read connection behind for the next request.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit


class MatrixError(RuntimeError):
    """A request that the homeserver answered with an error."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def check(self) -> Response:
        """This response, if it is a success."""
        if not 200 <= self.status < 300:
            raise MatrixError(f"HTTP {self.status}: {self.body[:500].decode(errors='replace')}")
        return self


@dataclass(frozen=True)
class Mxc:
    """A parsed `mxc://server/media_id` URI."""

    server_name: str
    media_id: str

    @classmethod
    def parse(cls, uri: str) -> Mxc:
        parts = urlsplit(uri)
        if parts.scheme != "mxc" or not parts.netloc or not parts.path.strip("/"):
            raise ValueError(f"not an mxc:// URI: {uri!r}")
        return cls(parts.netloc, parts.path.strip("/"))

    def __str__(self) -> str:
        return f"mxc://{self.server_name}/{self.media_id}"


class MatrixClient:
    def __init__(self, base_url: str, access_token: str | None = None, timeout: float = 60.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"expected http://host:port, got {base_url!r}")
        self.base_url = base_url
        self.access_token = access_token
        self.timeout = timeout
        self._host = parts.hostname
        self._port = parts.port

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None,
                query: dict[str, str | int] | None = None, timeout: float | None = None) -> Response:
        headers = {}
        if self.access_token is not None:
            headers["Authorization"] = f"Bearer {self.access_token}"
        if content_type is not None:
            headers["Content-Type"] = content_type
        if query:
            path = f"{path}?{urlencode(query)}"
        connection = http.client.HTTPConnection(self._host, self._port, timeout=timeout or self.timeout)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return Response(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            connection.close()

    def post_json(self, path: str, content: dict[str, Any]) -> Any:
        return self.request("POST", path, json.dumps(content).encode(), "application/json").check().json()

    @classmethod
    def register(cls, base_url: str, shared_secret: str, username: str, password: str,
                 admin: bool = False) -> MatrixClient:
        """Register a user through Synapse's admin API with the registration shared secret
        (works with `enable_registration: false`) and return a client logged in as them."""
        anonymous = cls(base_url)
        path = "/_synapse/admin/v1/register"
        nonce = anonymous.request("GET", path).check().json()["nonce"]
        signed = "\x00".join((nonce, username, password, "admin" if admin else "notadmin"))
        mac = hmac.new(shared_secret.encode(), signed.encode(), hashlib.sha1)
        registered = anonymous.post_json(path, {
            "nonce": nonce, "username": username, "password": password, "admin": admin, "mac": mac.hexdigest(),
        })
        return cls(base_url, registered["access_token"])

    def upload(self, data: bytes, content_type: str, filename: str) -> Mxc:
        response = self.request("POST", "/_matrix/media/v3/upload", data, content_type, {"filename": filename})
        return Mxc.parse(response.check().json()["content_uri"])

    def download(self, mxc: Mxc, timeout: float | None = None) -> Response:
        """Authenticated download (MSC3916), the only kind Synapse serves by default."""
        return self.request("GET", self._media_path("download", mxc), timeout=timeout)

    def thumbnail(self, mxc: Mxc, width: int, height: int, method: str = "scale") -> Response:
        query: dict[str, str | int] = {"width": width, "height": height, "method": method}
        return self.request("GET", self._media_path("thumbnail", mxc), query=query)

    @staticmethod
    def _media_path(kind: str, mxc: Mxc) -> str:
        return f"/_matrix/client/v1/media/{kind}/{quote(mxc.server_name)}/{quote(mxc.media_id)}"
