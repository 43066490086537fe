"""Fetch a job's product image from URLs we do not control, without becoming an SSRF proxy.

Every hop (the first URL and each redirect) is checked the same way: http/https only, no
credentials in the URL, the host resolved here and **every** address it resolves to refused if
it is not public (loopback, private, link-local such as cloud metadata, CGNAT, multicast,
reserved, also when wrapped in IPv6). The request is then sent to the checked address itself,
with the original name in the Host header and TLS SNI, so a second DNS answer (rebinding) cannot
redirect the connection. The body is streamed under a byte cap, sniffed by its magic bytes (the
Content-Type header is not trusted) and fully decoded by ``img2mesh.image_decoding.inspect_image``,
which enforces the pixel limit (decompression bombs), refuses truncated files and names the
formats it refuses, in bounded memory. A job's URLs are bounded in number and length, and all of
its downloads together by a deadline.
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
from img2mesh.errors import InvalidInput
from img2mesh.image_decoding import MIME_TYPES, accepted_format, inspect_image, refusal

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

    connect_timeout_s: float = Settings.default("download_connect_timeout_s")
    read_timeout_s: float = Settings.default("download_read_timeout_s")
    #: Cap on the whole download of one URL, redirects included: a server that drips one byte
    #: every few seconds never trips the read timeout.
    total_timeout_s: float = Settings.default("download_total_timeout_s")
    max_bytes: int = Settings.default("download_max_bytes")
    max_redirects: int = Settings.default("download_max_redirects")
    max_pixels: int = Settings.default("download_max_pixels")
    #: How many of a job's URLs are tried, how long each may be, and how long all of them may take.
    max_urls: int = Settings.default("image_urls_max")
    max_url_length: int = Settings.default("image_url_max_length")
    job_timeout_s: float = Settings.default("download_job_timeout_s")
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
            max_urls=settings.image_urls_max,
            max_url_length=settings.image_url_max_length,
            job_timeout_s=settings.download_job_timeout_s,
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

    URLs are tried in order, at most ``max_urls`` of them, all within ``job_timeout_s``. If none
    works, the error lists each URL tried with its failure; it is a :class:`TransientJobError` if
    any URL failed in a way that may pass (timeout, connection error, 5xx, 429), else a
    :class:`PermanentJobError`.

    Raises:
        PermanentJobError: no URLs, or every URL failed permanently (404/403/410, not an image,
            truncated, too many pixels, too large, forbidden address, too many redirects).
        TransientJobError: at least one URL failed transiently and none succeeded.
    """
    if not urls:
        raise PermanentJobError("the job has no image_urls: send at least one product image URL")
    owned = client is None
    http = client or httpx.AsyncClient(trust_env=False, follow_redirects=False)
    tried = list(urls[: limits.max_urls])
    failures: list[tuple[str, JobError]] = []
    deadline = asyncio.get_running_loop().time() + limits.job_timeout_s
    try:
        for url in tried:
            if deadline <= asyncio.get_running_loop().time():
                break
            try:
                return await _download_before(http, url, limits, deadline)
            except JobError as error:
                failures.append((url, error))
    finally:
        if owned:
            await http.aclose()
    raise no_usable_image(urls, tried, failures, limits)


async def download_each(
    urls: Sequence[str], limits: DownloadLimits, client: httpx.AsyncClient, deadline: float | None = None,
) -> list[DownloadedImage | JobError]:
    """Download all of ``urls`` at once, together within ``job_timeout_s`` (or before ``deadline``, on
    the event loop's clock, when several calls share it): each URL's image, or why it gave none, in
    the order of ``urls`` (the caller bounds their number)."""
    if deadline is None:
        deadline = asyncio.get_running_loop().time() + limits.job_timeout_s

    async def one(url: str) -> DownloadedImage | JobError:
        try:
            return await _download_before(client, url, limits, deadline)
        except JobError as error:
            return error

    return list(await asyncio.gather(*(one(url) for url in urls)))


async def _download_before(
    http: httpx.AsyncClient, url: str, limits: DownloadLimits, deadline: float
) -> DownloadedImage:
    """One URL within ``total_timeout_s`` and before ``deadline`` (the event loop's clock)."""
    budget = min(limits.total_timeout_s, deadline - asyncio.get_running_loop().time())
    try:
        return await asyncio.wait_for(_download_one(http, url, limits), budget)
    except asyncio.TimeoutError:
        raise TransientJobError(f"the download took longer than {budget:g} s") from None


def no_usable_image(
    urls: Sequence[str], tried: list[str], failures: list[tuple[str, JobError]], limits: DownloadLimits,
    bound: tuple[int, str] | None = None,
) -> JobError:
    """One error for a job none of whose URLs gave an image, saying which were tried and why not.

    ``bound`` is how many URLs are tried at most and the setting that says so (default
    ``IMAGE_URLS_MAX``'s)."""
    most, setting = bound or (limits.max_urls, "IMAGE_URLS_MAX")
    untried = len(urls) - len(failures)
    if len(urls) == 1:
        url, error = failures[0]
        message = f"image {shown_url(url)}: {error}"
    else:
        listed = "; ".join(f"{index}) {shown_url(url)}: {error}" for index, (url, error) in enumerate(failures, 1))
        message = f"none of the {len(failures)} image URLs gave a usable image: {listed}"
    if len(failures) < len(tried):
        message += (f"; the downloads of this job took longer than {limits.job_timeout_s:g} s in all "
                    "(DOWNLOAD_JOB_TIMEOUT_S), so the remaining URLs were not tried")
    elif untried:
        message += f"; the other {untried} URLs were not tried (at most {most} are, {setting})"
    if len(failures) < len(tried) or any(isinstance(error, TransientJobError) for _, error in failures):
        return TransientJobError(message)
    return PermanentJobError(message)


async def _download_one(http: httpx.AsyncClient, url: str, limits: DownloadLimits) -> DownloadedImage:
    """Follow up to ``max_redirects`` redirects by hand, re-checking each hop, then validate."""
    current = url
    for _ in range(limits.max_redirects + 1):
        target = _parse_url(current, limits.max_url_length)
        address = await _resolve_checked(target, limits)
        request = _pinned_request(http, target, address, limits)
        try:
            response = await http.send(request, stream=True, follow_redirects=False)
        except httpx.TimeoutException as error:
            raise TransientJobError(f"timed out waiting for {target.host}") from error
        except httpx.TransportError as error:
            raise _transport_failure(error, target.host, connected=False) from error
        try:
            if response.status_code in _REDIRECT_STATUSES:
                location = response.headers.get("location")
                if not location:
                    raise PermanentJobError(f"HTTP {response.status_code} redirect without a Location header")
                current = urllib.parse.urljoin(current, location)
                continue
            _check_status(response.status_code)
            data = await _read_capped(response, limits.max_bytes, target.host)
        finally:
            await response.aclose()
        return await _validate_image(url, data, limits.max_pixels)
    raise PermanentJobError(f"more than {limits.max_redirects} redirects: link the image itself")


def _transport_failure(error: httpx.TransportError, host: str, *, connected: bool) -> JobError:
    """A failed exchange with ``host``, said in words (httpx's texts name Python internals)."""
    certificate = _certificate_error(error)
    if certificate is not None:
        return PermanentJobError(f"the TLS certificate of {host} is not valid ({certificate.verify_message})")
    if isinstance(error, httpx.UnsupportedProtocol):
        return PermanentJobError(f"{host} cannot be reached over this protocol: use an https:// URL")
    if isinstance(error, httpx.RemoteProtocolError):
        return TransientJobError(f"{host} closed the connection or answered with something that is not valid HTTP")
    if isinstance(error, httpx.ConnectError) and not connected:
        return TransientJobError(f"could not connect to {host}")
    return TransientJobError(f"the connection to {host} broke off")


@dataclass(frozen=True)
class _Target:
    url: httpx.URL
    scheme: str
    host: str
    port: int


def _parse_url(text: str, max_length: int) -> _Target:
    """Accept only absolute http(s) URLs with a valid host and port and without user:password@."""
    if len(text) > max_length:
        raise PermanentJobError(
            f"the URL is {len(text)} characters long, more than the {max_length} accepted (IMAGE_URL_MAX_LENGTH)"
        )
    try:
        url = httpx.URL(text)
        scheme, port, userinfo = url.scheme, url.port, url.userinfo
    except (httpx.InvalidURL, TypeError, ValueError) as error:
        raise PermanentJobError(f"not a valid URL ({str(error)[:200]})") from error
    if scheme not in ("http", "https"):
        raise PermanentJobError(f"the URL scheme {scheme or '(none)'!r} is not allowed: use an https:// URL")
    try:
        host = url.host
    except ValueError as error:  # IDNA: a name that cannot be encoded for DNS
        shown = url.raw_host[:100].decode("ascii", "replace")
        raise PermanentJobError(f"{shown!r} is not a valid host name") from error
    if not host:
        raise PermanentJobError("the URL has no host name")
    if userinfo:
        raise PermanentJobError("URLs with a user name or password are not allowed")
    if port is not None and not 0 < port <= 65535:
        raise PermanentJobError(f"the URL's port {port} is not a valid port number (1 to 65535)")
    if not _is_host(host):
        raise PermanentJobError(f"{host[:100]!r} is not a valid host name")
    return _Target(url=url, scheme=scheme, host=host, port=port or (443 if scheme == "https" else 80))


def _is_host(host: str) -> bool:
    """An IP address, or a name whose labels DNS can carry (1–63 characters each, 253 in all)."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:
        encoded = host.rstrip(".").encode("idna")
    except UnicodeError:
        return False
    return 0 < len(encoded) <= 253 and all(0 < len(label) <= 63 for label in encoded.split(b"."))


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
    except (UnicodeError, ValueError, OverflowError) as error:
        raise PermanentJobError(f"{target.host[:100]!r} is not a valid host name") from error
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
        raise TransientJobError(f"the server answered HTTP {status}, a temporary error")
    hints = {
        403: "access denied: make the image public",
        404: "not found: check the URL",
        410: "gone: the image was deleted",
    }
    raise PermanentJobError(f"the server answered HTTP {status} ({hints.get(status, 'no image returned')})")


async def _read_capped(response: httpx.Response, max_bytes: int, host: str) -> bytes:
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
        failure = _transport_failure(error, host, connected=True)
        raise type(failure)(f"{failure} after {received} bytes of the image") from error
    return b"".join(chunks)


async def _validate_image(url: str, data: bytes, max_pixels: int) -> DownloadedImage:
    """Refuse non-images by their bytes, naming what they are, then decode fully (off the event loop)."""
    if accepted_format(data) is None:
        raise PermanentJobError(refusal(data))
    try:
        image_format, width, height = await asyncio.to_thread(inspect_image, data, max_pixels=max_pixels)
    except InvalidInput as error:
        raise PermanentJobError(str(error)) from error
    return DownloadedImage(url=url, data=data, content_type=MIME_TYPES[image_format], width=width, height=height)


def _certificate_error(error: BaseException) -> ssl.SSLCertVerificationError | None:
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


def shown_url(url: str) -> str:
    """The URL without its query string (signed URLs carry credentials there), shortened."""
    try:
        parts = urllib.parse.urlsplit(str(url))
    except ValueError:  # not even a URL: shown up to where a query would start
        return str(url).split("?", 1)[0][:200]
    shown = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    if parts.query:
        shown += "?…"
    return shown if len(shown) <= 200 else shown[:199] + "…"
