"""Fetch a job's product image from URLs we do not control, without becoming an SSRF proxy.

Every hop (the first URL and each redirect) is checked the same way: http/https only, no
credentials in the URL, the host resolved here and **every** address it resolves to refused if
it is not public (loopback, private, link-local such as cloud metadata, CGNAT, multicast,
reserved, also when wrapped in IPv6). The request is then sent to the checked address itself,
with the original name in the Host header and TLS SNI, so a second DNS answer (rebinding) cannot
redirect the connection. The body is streamed under a byte cap, sniffed by its magic bytes (the
Content-Type header is not trusted) and fully decoded by ``img2mesh.image_decoding.decode_image``,
which enforces the pixel limit (decompression bombs) and refuses truncated files.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

from client_worker.config import Settings
from client_worker.errors import JobError, PermanentJobError, TransientJobError
from img2mesh.contract import MAX_IMAGE_PIXELS
from img2mesh.errors import InvalidInput
from img2mesh.image_decoding import decode_image

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_TRANSIENT_STATUSES = frozenset({408, 425, 429})
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_DEFAULT_PORTS = frozenset({80, 443})


@dataclass(frozen=True)
class DownloadLimits:
    """Limits for one image download; the defaults suit product photos on a public CDN.

    ``allowed_networks`` lists networks that may be reached although they are not public (a
    private CDN, or 127.0.0.0/8 for tests); ``allowed_hosts`` lists host names (exact, lowercase)
    whose addresses are not checked at all. Allowlisted destinations may use any port, while
    public hosts are only contacted on ports 80 and 443.
    """

    connect_timeout_s: float = 5.0
    read_timeout_s: float = 15.0
    #: Cap on the whole download of one URL, redirects included: a server that drips one byte
    #: every few seconds never trips the read timeout.
    total_timeout_s: float = 60.0
    max_bytes: int = 25 * 1024 * 1024
    max_redirects: int = 5
    max_pixels: int = MAX_IMAGE_PIXELS
    allowed_networks: tuple[IPNetwork, ...] = field(default_factory=tuple)
    allowed_hosts: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings) -> DownloadLimits:
        """The ``DOWNLOAD_*`` settings."""
        return cls.allowing(
            *settings.download_allowlist,
            connect_timeout_s=settings.download_connect_timeout_s,
            read_timeout_s=settings.download_read_timeout_s,
            total_timeout_s=settings.download_total_timeout_s,
            max_bytes=settings.download_max_bytes,
            max_redirects=settings.download_max_redirects,
            max_pixels=settings.download_max_pixels,
        )

    @classmethod
    def allowing(cls, *entries: str, **limits: float | int) -> DownloadLimits:
        """Limits with ``entries`` allowlisted: each is an address or network in CIDR notation
        (``"127.0.0.0/8"``, ``"10.0.0.5"``; ``"0.0.0.0/0"`` and ``"::/0"`` allow everything) or
        a host name (``"cdn.internal"``)."""
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for entry in (e.strip() for e in entries):
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(allowed_networks=tuple(networks), allowed_hosts=frozenset(hosts), **limits)


@dataclass(frozen=True)
class DownloadedImage:
    """A downloaded image that decoded completely. ``content_type`` is sniffed, not the header's."""

    url: str
    data: bytes
    content_type: str
    width: int
    height: int


async def download_first_image(
    urls: Sequence[str], limits: DownloadLimits, client: httpx.AsyncClient | None = None
) -> DownloadedImage:
    """Return the first of ``urls`` that yields a complete, decodable image.

    URLs are tried in order. If none works, the error lists each URL with its failure; it is a
    :class:`TransientJobError` if any URL failed in a way that may pass (timeout, connection
    error, 5xx, 429), else a :class:`PermanentJobError`.

    Raises:
        PermanentJobError: no URLs, or every URL failed permanently (404/403/410, not an image,
            truncated, too many pixels, too large, forbidden address, too many redirects).
        TransientJobError: at least one URL failed transiently and none succeeded.
    """
    if not urls:
        raise PermanentJobError("the job has no image_urls: send at least one product image URL")
    owned = client is None
    http = client or httpx.AsyncClient(trust_env=False, follow_redirects=False)
    failures: list[tuple[str, JobError]] = []
    try:
        for url in urls:
            try:
                return await asyncio.wait_for(_download_one(http, url, limits), limits.total_timeout_s)
            except asyncio.TimeoutError:
                failures.append(
                    (url, TransientJobError(f"the download took longer than {limits.total_timeout_s:g} s"))
                )
            except JobError as error:
                failures.append((url, error))
    finally:
        if owned:
            await http.aclose()
    if len(failures) == 1:
        url, error = failures[0]
        message = f"image {_redact(url)}: {error}"
    else:
        listed = "; ".join(f"{index}) {_redact(url)}: {error}" for index, (url, error) in enumerate(failures, 1))
        message = f"none of the {len(failures)} image URLs gave a usable image: {listed}"
    if any(isinstance(error, TransientJobError) for _, error in failures):
        raise TransientJobError(message)
    raise PermanentJobError(message)


async def _download_one(http: httpx.AsyncClient, url: str, limits: DownloadLimits) -> DownloadedImage:
    """Follow up to ``max_redirects`` redirects by hand, re-checking each hop, then validate."""
    current = url
    for _ in range(limits.max_redirects + 1):
        target = _parse_url(current)
        address = await _resolve_checked(target, limits)
        request = _pinned_request(http, target, address, limits)
        try:
            response = await http.send(request, stream=True, follow_redirects=False)
        except httpx.TimeoutException as error:
            raise TransientJobError(f"timed out talking to {target.host} ({type(error).__name__})") from error
        except httpx.TransportError as error:
            if _is_certificate_error(error):
                raise PermanentJobError(f"the TLS certificate of {target.host} is not valid: {error}") from error
            raise TransientJobError(f"could not connect to {target.host}: {error!r}") from error
        try:
            if response.status_code in _REDIRECT_STATUSES:
                location = response.headers.get("location")
                if not location:
                    raise PermanentJobError(f"HTTP {response.status_code} redirect without a Location header")
                current = urllib.parse.urljoin(current, location)
                continue
            _check_status(response.status_code)
            data = await _read_capped(response, limits.max_bytes)
        finally:
            await response.aclose()
        return await _validate_image(url, data, limits.max_pixels)
    raise PermanentJobError(f"more than {limits.max_redirects} redirects: link the image itself")


@dataclass(frozen=True)
class _Target:
    url: httpx.URL
    scheme: str
    host: str
    port: int


def _parse_url(text: str) -> _Target:
    """Accept only absolute http(s) URLs with a host and without user:password@."""
    try:
        url = httpx.URL(text)
    except (httpx.InvalidURL, TypeError) as error:
        raise PermanentJobError(f"not a valid URL ({error})") from error
    if url.scheme not in ("http", "https"):
        raise PermanentJobError(f"the URL scheme {url.scheme or '(none)'!r} is not allowed: use an https:// URL")
    if not url.host:
        raise PermanentJobError("the URL has no host name")
    if url.userinfo:
        raise PermanentJobError("URLs with a user name or password are not allowed")
    port = url.port or (443 if url.scheme == "https" else 80)
    return _Target(url=url, scheme=url.scheme, host=url.host, port=port)


async def _resolve_checked(target: _Target, limits: DownloadLimits) -> IPAddress:
    """Resolve the host and refuse it unless every address is public or allowlisted."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            target.host, target.port, type=socket.SOCK_STREAM
        )
    except socket.gaierror as error:
        if error.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
            raise PermanentJobError(f"the host {target.host!r} does not exist (DNS: {error.strerror})") from error
        raise TransientJobError(f"DNS lookup of {target.host!r} failed: {error.strerror}") from error
    addresses = sorted(
        {ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos}, key=lambda a: (a.version, a)
    )
    if not addresses:
        raise PermanentJobError(f"the host {target.host!r} has no addresses")
    for address in addresses:
        allowlisted = target.host.lower().rstrip(".") in limits.allowed_hosts or any(
            address in network for network in limits.allowed_networks
        )
        if not allowlisted and not is_public_address(address):
            raise PermanentJobError(
                f"the host {target.host!r} resolves to {address}, a private, loopback, link-local or "
                "reserved address: image URLs must point to a public server"
            )
        if not allowlisted and target.port not in _DEFAULT_PORTS:
            raise PermanentJobError(
                f"port {target.port} is not allowed for public hosts: serve the image on port 80 or 443"
            )
    return addresses[0]


def is_public_address(address: IPAddress) -> bool:
    """True only for globally routable unicast addresses, also looking inside IPv6 wrappers.

    ``is_global`` alone is not enough: multicast counts as global, and ``::ffff:127.0.0.1``,
    NAT64 ``64:ff9b::7f00:1``, 6to4 and Teredo carry an IPv4 address that must be judged itself.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded: list[IPAddress] = []
        if address.ipv4_mapped is not None:
            embedded.append(address.ipv4_mapped)
        if address in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if address.sixtofour is not None:
            embedded.append(address.sixtofour)
        if address.teredo is not None:
            embedded.extend(address.teredo)
        if embedded:
            return all(is_public_address(inner) for inner in embedded)
    return address.is_global and not (
        address.is_multicast
        or address.is_reserved
        or address.is_loopback
        or address.is_link_local
        or address.is_unspecified
        or address.is_private
    )


def _pinned_request(
    http: httpx.AsyncClient, target: _Target, address: IPAddress, limits: DownloadLimits
) -> httpx.Request:
    """A request that connects to ``address`` but names the original host (Host header, SNI).

    Connecting to the literal address is what closes the DNS-rebinding gap: httpx never resolves
    the name again. TLS still verifies the certificate against the original host name, because
    httpcore uses the ``sni_hostname`` extension as the server name.
    """
    pinned_url = target.url.copy_with(host=str(address))
    default_port = 443 if target.scheme == "https" else 80
    name = f"[{target.host}]" if ":" in target.host else target.host
    host_header = name if target.port == default_port else f"{name}:{target.port}"
    timeout = httpx.Timeout(
        connect=limits.connect_timeout_s,
        read=limits.read_timeout_s,
        write=limits.read_timeout_s,
        pool=limits.connect_timeout_s,
    )
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    return http.build_request(
        "GET",
        pinned_url,
        headers={"Host": host_header, "Accept": "image/*", "Accept-Encoding": "identity"},
        timeout=timeout,
        extensions=extensions,
    )


def _check_status(status: int) -> None:
    """200 passes; 408/425/429 and 5xx are transient; every other status is permanent."""
    if status == 200:
        return
    if status in _TRANSIENT_STATUSES or 500 <= status <= 599:
        raise TransientJobError(f"the server answered HTTP {status}; will retry")
    hints = {
        403: "access denied: make the image public",
        404: "not found: check the URL",
        410: "gone: the image was deleted",
    }
    raise PermanentJobError(f"the server answered HTTP {status} ({hints.get(status, 'no image returned')})")


async def _read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    """Read the body, refusing it as soon as it (or its declared length) exceeds ``max_bytes``."""
    too_large = f"the file is larger than the {max_bytes} byte limit: upload a smaller image"
    declared = response.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        raise PermanentJobError(f"{too_large} (Content-Length {int(declared)})")
    chunks: list[bytes] = []
    received = 0
    try:
        async for chunk in response.aiter_bytes():
            received += len(chunk)
            if received > max_bytes:
                raise PermanentJobError(too_large)
            chunks.append(chunk)
    except httpx.TimeoutException as error:
        raise TransientJobError(f"timed out reading the image after {received} bytes") from error
    except httpx.TransportError as error:
        raise TransientJobError(f"the connection broke after {received} bytes: {error!r}") from error
    return b"".join(chunks)


def sniff_image_type(data: bytes) -> str | None:
    """The MIME type of an image file from its magic bytes, or None if it is not one we accept."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:2] == b"BM":
        return "image/bmp"
    return None


async def _validate_image(url: str, data: bytes, max_pixels: int) -> DownloadedImage:
    """Refuse non-images by their bytes, then decode fully (off the event loop)."""
    content_type = sniff_image_type(data)
    if content_type is None:
        start = data[:15].decode("ascii", "replace").strip()
        raise PermanentJobError(
            f"the file is not an image (starts with {start!r}): link a JPEG, PNG or WebP file, "
            "not a web page"
        )
    try:
        rgba = await asyncio.to_thread(decode_image, data, max_pixels=max_pixels)
    except InvalidInput as error:
        raise PermanentJobError(str(error)) from error
    height, width = rgba.shape[:2]
    return DownloadedImage(url=url, data=data, content_type=content_type, width=width, height=height)


def _is_certificate_error(error: BaseException) -> bool:
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _redact(url: str) -> str:
    """The URL without its query string (signed URLs carry credentials there), shortened."""
    parts = urllib.parse.urlsplit(str(url))
    shown = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    if parts.query:
        shown += "?…"
    return shown if len(shown) <= 200 else shown[:199] + "…"
