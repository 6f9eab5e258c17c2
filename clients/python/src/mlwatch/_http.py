"""A small HTTP/1.1 client on the standard library (keep-alive, bearer token)."""

from __future__ import annotations

import http.client
import ssl
import urllib.parse
from typing import Dict, Optional, Tuple


class Connection:
    """One persistent connection to a base URL; reopened after an error."""

    def __init__(self, url: str, *, token: Optional[str] = None, timeout: float = 30.0,
                 ssl_context: Optional[ssl.SSLContext] = None) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"url: expected http(s)://host[:port], found {url!r}")
        self.https = parsed.scheme == "https"
        self.host = parsed.hostname
        self.port = parsed.port
        self.prefix = parsed.path.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.ssl_context = ssl_context
        self._conn: Optional[http.client.HTTPConnection] = None

    def _open(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.https:
                self._conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout, context=self.ssl_context
                )
            else:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method: str, path: str, body: bytes,
                content_type: str = "application/json") -> Tuple[int, Dict[str, str], bytes]:
        """Sends one request; raises OSError / HTTPException on transport failure."""
        headers = {"Content-Type": content_type, "Content-Length": str(len(body))}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        conn = self._open()
        try:
            conn.request(method, self.prefix + path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except BaseException:
            self.close()
            raise
        if resp.getheader("connection", "").lower() == "close":
            self.close()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data


def request(method: str, url: str, path: str, body: bytes, *, token: Optional[str] = None,
            timeout: float = 30.0) -> Tuple[int, Dict[str, str], bytes]:
    """One request on a fresh connection."""
    conn = Connection(url, token=token, timeout=timeout)
    try:
        return conn.request(method, path, body)
    finally:
        conn.close()
