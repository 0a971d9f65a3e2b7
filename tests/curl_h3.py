"""curl_cffi as an HTTP/3 client: libcurl with ngtcp2 + nghttp3, a non-Python
stack. Blocking; from a test run it in a worker thread:

    result = await anyio.to_thread.run_sync(partial(curl_h3, url, cafile=certs.cafile))

``http_version=CurlHttpVersion.V3ONLY`` (``"v3only"``) makes curl speak HTTP/3
and nothing else: no Alt-Svc, no fallback to TCP.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

#: Default limit for one whole request.
TIMEOUT = 10.0


@dataclass
class CurlResult:
    status: int
    #: Response header fields in order, names lowercased (curl_cffi's Headers keep
    #: the case on the wire, which HTTP/3 makes lowercase anyway).
    headers: list[tuple[str, str]]
    body: bytes
    #: curl's CURLINFO_HTTP_VERSION: 30 for HTTP/3.
    http_version: int
    extra: dict[str, object] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name.lower():
                return value
        return None


def curl_h3(
    url: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: Sequence[tuple[str, str]] = (),
    cafile: str | os.PathLike[str] | None = None,
    verify: bool = True,
    timeout: float = TIMEOUT,
) -> CurlResult:
    """One HTTP/3 request with curl_cffi; ``cafile`` to trust a test CA, or
    ``verify=False`` to check nothing. Raises curl_cffi's ``RequestException``
    (``curl_cffi.requests.exceptions``) for a transport failure, never for a
    status code."""
    from curl_cffi import CurlHttpVersion, requests

    verify_arg: bool | str = os.fspath(cafile) if (cafile is not None and verify) else verify
    response = requests.request(
        method,
        url,
        data=body,
        headers=list(headers) or None,
        verify=verify_arg,
        http_version=CurlHttpVersion.V3ONLY,
        timeout=timeout,
        allow_redirects=False,
    )
    return CurlResult(
        status=response.status_code,
        headers=[(k.lower(), v) for k, v in response.headers.multi_items()],
        body=response.content,
        http_version=int(response.http_version),
    )
