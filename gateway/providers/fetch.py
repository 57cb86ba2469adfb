"""Images given by http(s) URL, downloaded and inlined for providers that cannot fetch them
(Gemini's API takes only its own Files-API URIs in fileData).

The gateway fetches on its users' behalf, so it refuses URLs that resolve to private, loopback or
link-local addresses (unless GATEWAY_FETCH_PRIVATE_URLS is on), follows at most 3 redirects, and stops
at 20 MB. The address is checked twice: up front, for a clear error, and again when the connection is made,
on the very address it connects to. A host that answers DNS with a public address for the check and a
private one for the connection (DNS rebinding) is refused there.
"""
import base64
import ipaddress
import socket
import threading
import time
from urllib.parse import urljoin, urlsplit

import requests
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util.connection import allowed_gai_family

from gateway.providers.pools import Adapter, HTTPPool, HTTPSPool
from gateway.providers.transport import make_session
from gateway.translate.common import UpstreamError, error_object
from gateway.translate.media import sniff

MAX_BYTES = 20 * 1024 * 1024
TIMEOUT = (5, 15)          # connect, and between bytes
TOTAL_SECONDS = 30         # the whole download, when the request gives no deadline


def _bad(message, param):
    return UpstreamError(400, error_object(message, "invalid_request_error", param, "invalid_image_url"))


def _public(host):
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError, ValueError):  # unresolvable, or not a valid host name at all
        return False
    return all(_is_global(info[4][0]) for info in infos)


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _is_global(address):
    """A public address, IPv6 forms that carry an IPv4 address (NAT64, 6to4, Teredo) judged by that too."""
    ip = ipaddress.ip_address(address)
    if not ip.is_global:
        return False
    if ip.version == 4:
        return True
    embedded = [ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None,
                ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None]
    return all(e is None or e.is_global for e in embedded)


class _PublicOnly:
    """A urllib3 connection that resolves its host itself and connects only if every address is public,
    to the address it checked (urllib3 would resolve again). Host header, SNI and certificate checks still
    use the host name."""

    def _new_conn(self):
        try:
            infos = socket.getaddrinfo(self._dns_host, self.port, allowed_gai_family(), socket.SOCK_STREAM)
        except (OSError, UnicodeError) as e:
            raise NewConnectionError(self, f"Failed to resolve {self.host}: {e}") from e
        addresses = list(dict.fromkeys(info[4][0] for info in infos))
        if not addresses or not all(_is_global(a) for a in addresses):
            raise NewConnectionError(self, f"{self.host} resolves to an address that is not public")
        name = self._dns_host
        try:
            for i, address in enumerate(addresses):  # each in turn, as urllib3 would
                self._dns_host = address
                try:
                    return super()._new_conn()
                except (NewConnectionError, ConnectTimeoutError):
                    if i == len(addresses) - 1:
                        raise
        finally:
            self._dns_host = name


class _PublicHTTPConnection(_PublicOnly, HTTPConnection):
    pass


class _PublicHTTPSConnection(_PublicOnly, HTTPSConnection):
    pass


class _PublicHTTPPool(HTTPPool):
    ConnectionCls = _PublicHTTPConnection


class _PublicHTTPSPool(HTTPSPool):
    ConnectionCls = _PublicHTTPSConnection


class _PublicOnlyAdapter(Adapter):
    """Connections that check their address. Through a proxy (HTTP(S)_PROXY) the proxy resolves the host,
    out of the gateway's sight: there the up-front check is all there is."""
    pool_classes = {"http": _PublicHTTPPool, "https": _PublicHTTPSPool}


_public_session = None
_public_session_lock = threading.Lock()


def public_only_session():
    """The session image downloads use unless private URLs are allowed: one per process, made on first use."""
    global _public_session
    with _public_session_lock:
        if _public_session is None:
            _public_session = make_session(16, _PublicOnlyAdapter)
    return _public_session


def sessions_made():
    """The image-download sessions this process has made: the periodic check closes their idle connections."""
    return [_public_session] if _public_session is not None else []


# Types that say nothing about the bytes: object stores serve uploads without a type of their own this way
# (S3's binary/octet-stream), so the bytes' own signature names the image.
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream", "application/binary"})

def _inlinable(mime):
    return mime.startswith("image/") or mime == "application/pdf"


def download(session, url, param, allow_private=False, deadline=None):
    """A `data:<type>;base64,...` URL with the image at `url`, fetched before `deadline` (time.monotonic)."""
    deadline = deadline or time.monotonic() + TOTAL_SECONDS
    http = session if allow_private else public_only_session()
    for _ in range(4):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _bad("Image URLs must be http(s) URLs or base64 data: URLs.", param)
        if not allow_private and not _public(parts.hostname):
            raise _bad(f"The image URL's host {parts.hostname!r} is not a public address.", param)
        try:
            left = max(0.05, deadline - time.monotonic())
            resp = http.get(url, timeout=(min(TIMEOUT[0], left), min(TIMEOUT[1], left)), stream=True,
                               allow_redirects=False)
        except requests.RequestException as e:
            raise _bad(f"Could not download the image at {parts.hostname}: {type(e).__name__}.", param) from None
        with resp:
            if resp.is_redirect and resp.headers.get("Location"):
                url = urljoin(url, resp.headers["Location"])
                continue
            if resp.status_code != 200:
                raise _bad(f"Could not download the image at {parts.hostname}: HTTP {resp.status_code}.", param)
            mime = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            generic = mime in _GENERIC_TYPES
            if not generic and not _inlinable(mime):
                raise _bad(f"The URL did not return an image (Content-Type {mime}).", param)
            data = bytearray()
            try:
                # read1: whatever has arrived, so the clock is checked as bytes trickle in (read(n) would
                # wait for n bytes or the end).
                for piece in iter(lambda: resp.raw.read1(65536), b""):
                    data += piece
                    if len(data) > MAX_BYTES:
                        raise _bad("The image is larger than 20 MB.", param)
                    if time.monotonic() > deadline:   # a server trickling bytes must not hold the request
                        raise _bad(f"The image at {parts.hostname} took too long to download.", param)
            except requests.RequestException as e:
                raise _bad(f"Could not download the image at {parts.hostname}: {type(e).__name__}.", param) from None
            if generic:
                mime = sniff(data)
                if mime is None:
                    raise _bad("The URL did not return an image (Content-Type "
                               f"{resp.headers.get('Content-Type') or 'missing'}, and not a known image format).",
                               param)
            return f"data:{mime};base64,{base64.b64encode(bytes(data)).decode()}"
    raise _bad("The image URL redirects too many times.", param)


def inline_images(request, session, allow_private=False, deadline=None):
    """The request with every http(s) image part replaced by a data: URL (a new dict; the input is kept)."""
    messages = request.get("messages") or []
    if not any(isinstance(m.get("content"), list) and any(
            p.get("type") == "image_url" and not str((p.get("image_url") or {}).get("url", "")).startswith("data:")
            for p in m["content"] if isinstance(p, dict)) for m in messages if isinstance(m, dict)):
        return request
    out = []
    for i, message in enumerate(messages):
        content = message.get("content")
        if not isinstance(content, list):
            out.append(message)
            continue
        parts = []
        for j, part in enumerate(content):
            url = (part.get("image_url") or {}).get("url", "") if part.get("type") == "image_url" else ""
            if url.startswith(("http://", "https://")):
                data_url = download(session, url, f"messages[{i}].content[{j}].image_url.url", allow_private,
                                    deadline)
                part = {**part, "image_url": {**part["image_url"], "url": data_url}}
            parts.append(part)
        out.append({**message, "content": parts})
    return {**request, "messages": out}
