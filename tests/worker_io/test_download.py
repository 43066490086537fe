"""Image download against a real local HTTP server: every hostile input fails with the right kind."""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from client_worker.download import DownloadLimits, download_first_image, is_public_address
from client_worker.errors import PermanentJobError, TransientJobError
from tests.support.image_server import ImageServer, Route, jpeg_bytes, png_declaring

LOCAL = DownloadLimits.allowing("127.0.0.0/8", connect_timeout_s=2.0, read_timeout_s=0.5, total_timeout_s=3.0)


async def test_valid_jpeg_is_returned_with_sniffed_type_and_size(image_server: ImageServer) -> None:
    image_server.routes["/mug.jpg"] = Route(body=jpeg_bytes((64, 48)), headers={"Content-Type": "text/html"})
    image = await download_first_image([image_server.url("/mug.jpg")], LOCAL)
    assert image.content_type == "image/jpeg"
    assert (image.width, image.height) == (64, 48)
    assert image.data == image_server.routes["/mug.jpg"].body
    assert image.url == image_server.url("/mug.jpg")


async def test_local_server_is_refused_without_the_allowlist(image_server: ImageServer) -> None:
    image_server.routes["/mug.jpg"] = Route(body=jpeg_bytes())
    with pytest.raises(PermanentJobError, match=r"resolves to 127\.0\.0\.1.*public server"):
        await download_first_image([image_server.url("/mug.jpg")], DownloadLimits())
    assert image_server.hosts_seen == [], "the forbidden address must not be contacted at all"


@pytest.mark.parametrize(
    "url, address",
    [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("http://10.1.2.3/image.jpg", "10.1.2.3"),
        ("http://127.0.0.1/image.jpg", "127.0.0.1"),
        ("http://2130706433/image.jpg", "127.0.0.1"),
        ("http://[::ffff:127.0.0.1]/image.jpg", "::ffff:7f00:1"),
        ("http://localhost/image.jpg", ""),
    ],
)
async def test_non_public_addresses_are_refused_after_resolution(url: str, address: str) -> None:
    with pytest.raises(PermanentJobError, match=rf"resolves to {address}.*private, loopback"):
        await download_first_image([url], DownloadLimits())


@pytest.mark.parametrize("target", ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.7/x.jpg"])
async def test_redirect_from_an_allowed_host_into_a_private_address_is_refused(
    image_server: ImageServer, target: str
) -> None:
    image_server.routes["/hop"] = Route(status=302, headers={"Location": target})
    with pytest.raises(PermanentJobError, match="private, loopback, link-local"):
        await download_first_image([image_server.url("/hop")], LOCAL)


async def test_redirects_are_followed_up_to_the_limit(image_server: ImageServer) -> None:
    image_server.routes["/final.jpg"] = Route(body=jpeg_bytes())
    image_server.routes["/b"] = Route(status=307, headers={"Location": "/final.jpg"})
    image_server.routes["/a"] = Route(status=301, headers={"Location": image_server.url("/b")})
    image = await download_first_image([image_server.url("/a")], LOCAL)
    assert image.content_type == "image/jpeg"

    image_server.routes["/loop"] = Route(status=302, headers={"Location": "/loop"})
    with pytest.raises(PermanentJobError, match="more than 5 redirects"):
        await download_first_image([image_server.url("/loop")], LOCAL)
    assert len(image_server.hosts_seen) == 3 + 6


@pytest.mark.parametrize(
    "status, kind, message",
    [
        (404, PermanentJobError, "HTTP 404 .not found"),
        (410, PermanentJobError, "HTTP 410 .gone"),
        (403, PermanentJobError, "HTTP 403 .access denied"),
        (503, TransientJobError, "HTTP 503"),
        (429, TransientJobError, "HTTP 429"),
    ],
)
async def test_http_errors_map_to_permanent_or_transient(
    image_server: ImageServer, status: int, kind: type[Exception], message: str
) -> None:
    image_server.routes["/x.jpg"] = Route(status=status, body=b"nope")
    with pytest.raises(kind, match=message):
        await download_first_image([image_server.url("/x.jpg")], LOCAL)


async def test_a_web_page_served_as_image_is_not_an_image(image_server: ImageServer) -> None:
    image_server.routes["/x.jpg"] = Route(body=b"<!doctype html><html>Shop</html>", headers={"Content-Type": "image/jpeg"})
    with pytest.raises(PermanentJobError, match=r"a web page \(HTML\), not an image: link the image file itself"):
        await download_first_image([image_server.url("/x.jpg")], LOCAL)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", r"the file is empty \(0 bytes\)"),
        (b"II*\x00" + bytes(200), "TIFF images are not supported: save the photo as JPEG, PNG or WebP"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(100), "HEIC/HEIF images are not supported"),
        (b"\x00\x00\x00\x1cftypavif" + bytes(100), "AVIF images are not supported"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "SVG drawings are not supported"),
    ],
    ids=["empty", "tiff", "heic", "avif", "svg"],
)
async def test_files_that_are_no_accepted_image_are_named(image_server: ImageServer, body: bytes, message: str) -> None:
    image_server.routes["/x"] = Route(body=body, headers={"Content-Type": "image/jpeg"})
    with pytest.raises(PermanentJobError, match=message) as caught:
        await download_first_image([image_server.url("/x")], LOCAL)
    assert "starts with" not in str(caught.value)


async def test_truncated_jpeg_is_refused(image_server: ImageServer) -> None:
    whole = jpeg_bytes((256, 256))
    image_server.routes["/x.jpg"] = Route(body=whole[: len(whole) // 2])
    with pytest.raises(PermanentJobError, match="truncated or corrupt"):
        await download_first_image([image_server.url("/x.jpg")], LOCAL)


@pytest.mark.parametrize("side", [8_000, 30_000])
async def test_decompression_bomb_is_refused_before_decoding(image_server: ImageServer, side: int) -> None:
    image_server.routes["/bomb.png"] = Route(body=png_declaring(side, side))
    with pytest.raises(PermanentJobError, match="too many pixels|more than the limit"):
        await download_first_image([image_server.url("/bomb.png")], LOCAL)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "streamed"])
async def test_file_over_the_size_cap_is_refused(image_server: ImageServer, chunked: bool) -> None:
    image_server.routes["/big.jpg"] = Route(body=jpeg_bytes() + bytes(20_000), drip_s=0.0 if chunked else None)
    limits = DownloadLimits.allowing("127.0.0.0/8", max_bytes=10_000)
    with pytest.raises(PermanentJobError, match="larger than the 10000 byte limit"):
        await download_first_image([image_server.url("/big.jpg")], limits)


async def test_slow_server_times_out_transiently(image_server: ImageServer) -> None:
    image_server.routes["/slow.jpg"] = Route(body=jpeg_bytes(), delay_s=1.5)
    with pytest.raises(TransientJobError, match="timed out"):
        await download_first_image([image_server.url("/slow.jpg")], LOCAL)


async def test_dripping_server_hits_the_total_deadline(image_server: ImageServer) -> None:
    image_server.routes["/drip.jpg"] = Route(body=jpeg_bytes() + bytes(8_000), drip_s=0.3)
    limits = DownloadLimits.allowing("127.0.0.0/8", read_timeout_s=1.0, total_timeout_s=1.0)
    with pytest.raises(TransientJobError, match="longer than 1 s"):
        await download_first_image([image_server.url("/drip.jpg")], limits)


async def test_first_valid_url_wins_and_failures_are_listed(image_server: ImageServer) -> None:
    image_server.routes["/page"] = Route(body=b"<html></html>")
    image_server.routes["/good.jpg"] = Route(body=jpeg_bytes())
    urls = [image_server.url("/missing.jpg"), image_server.url("/page"), image_server.url("/good.jpg")]
    image = await download_first_image(urls, LOCAL)
    assert image.url == image_server.url("/good.jpg")

    with pytest.raises(PermanentJobError) as failure:
        await download_first_image(urls[:2] + ["http://10.0.0.1/a.jpg?token=secret"], LOCAL)
    message = str(failure.value)
    assert message.startswith("none of the 3 image URLs gave a usable image")
    assert "1) " + urls[0] + ": the server answered HTTP 404" in message
    assert "2) " + urls[1] + ": the link returned a web page (HTML), not an image" in message
    assert "3) http://10.0.0.1/a.jpg?…: the host" in message
    assert "secret" not in message


async def test_any_transient_failure_makes_the_whole_transient(image_server: ImageServer) -> None:
    image_server.routes["/busy.jpg"] = Route(status=503)
    with pytest.raises(TransientJobError, match=r"1\) .*HTTP 404.*2\) .*HTTP 503"):
        await download_first_image([image_server.url("/missing.jpg"), image_server.url("/busy.jpg")], LOCAL)


async def test_scheme_credentials_and_empty_lists_are_refused() -> None:
    with pytest.raises(PermanentJobError, match="no image_urls"):
        await download_first_image([], LOCAL)
    with pytest.raises(PermanentJobError, match="scheme 'file' is not allowed"):
        await download_first_image(["file:///etc/passwd"], LOCAL)
    with pytest.raises(PermanentJobError, match="user name or password"):
        await download_first_image(["http://user:pw@example.com/a.jpg"], LOCAL)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://cdn.example:99999/a.jpg", "port 99999 is not a valid port number"),
        ("http://cdn.example:0/a.jpg", "port 0 is not a valid port number"),
        ("http://" + "a" * 70 + ".example/a.jpg", "is not a valid host name"),
        ("http://a..example/a.jpg", "is not a valid host name"),
        ("http://xn--/a.jpg", "is not a valid host name"),
        ("http://[::1/a.jpg", "not a valid URL"),
        ("https://cdn.example/" + "x" * 3000 + ".jpg", "3024 characters long, more than the 2048 accepted"),
    ],
    ids=["port-too-big", "port-zero", "label-too-long", "empty-label", "bad-punycode", "bad-ipv6", "too-long"],
)
async def test_malformed_urls_are_permanent_failures_in_words(url: str, message: str) -> None:
    with pytest.raises(PermanentJobError, match=message) as caught:
        await download_first_image([url], DownloadLimits())
    assert "Error" not in str(caught.value)


async def test_a_protocol_error_is_described_not_dumped() -> None:
    """A server that accepts the connection and answers garbage: no httpx internals, no "could not connect"."""
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"this is not HTTP at all\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        with pytest.raises(TransientJobError) as caught:
            await download_first_image([f"http://127.0.0.1:{port}/a.jpg"], LOCAL)
    message = str(caught.value)
    assert "not valid HTTP" in message
    assert "could not connect" not in message and "ProtocolError" not in message


async def test_a_job_tries_its_first_urls_only_and_says_so(image_server: ImageServer) -> None:
    urls = [image_server.url(f"/missing-{index}.jpg") for index in range(1000)]
    limits = DownloadLimits.allowing("127.0.0.0/8", max_urls=3)
    with pytest.raises(PermanentJobError) as caught:
        await download_first_image(urls, limits)
    message = str(caught.value)
    assert message.startswith("none of the 3 image URLs gave a usable image")
    assert "the other 997 URLs were not tried (at most 3 are, IMAGE_URLS_MAX)" in message
    assert len(message) < 1000


async def test_all_downloads_of_a_job_share_one_deadline(image_server: ImageServer) -> None:
    """Four silent servers: per URL the timeouts would allow 4 × 1.5 s; the job allows 2 s in all."""
    image_server.routes["/silent.jpg"] = Route(body=jpeg_bytes(), delay_s=5)
    urls = [image_server.url("/silent.jpg")] * 4
    limits = DownloadLimits.allowing("127.0.0.0/8", read_timeout_s=5, total_timeout_s=1.5, job_timeout_s=2.0)
    started = time.monotonic()
    with pytest.raises(TransientJobError, match="longer than 2 s in all .DOWNLOAD_JOB_TIMEOUT_S., so the remaining"):
        await download_first_image(urls, limits)
    assert time.monotonic() - started < 4.0  # 2 s and the event loop's slack under load, not 6 s


async def test_public_hosts_are_limited_to_web_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    _resolve_name(monkeypatch, "cdn.example", ["93.184.216.34"])
    with pytest.raises(PermanentJobError, match="port 6379 is not allowed"):
        await download_first_image(["http://cdn.example:6379/a.jpg"], DownloadLimits())


async def test_connection_goes_to_the_checked_address_not_a_second_lookup(
    image_server: ImageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name answers 127.0.0.1 once, then an address nobody listens on."""
    image_server.routes["/mug.jpg"] = Route(body=jpeg_bytes())
    answers = _resolve_name(monkeypatch, "images.test", ["127.0.0.1", "10.255.255.1"])
    port = image_server.base_url.rsplit(":", 1)[1]
    image = await download_first_image([f"http://images.test:{port}/mug.jpg"], LOCAL)
    assert image.content_type == "image/jpeg"
    assert answers == ["10.255.255.1"], "the name must be resolved exactly once"
    assert image_server.hosts_seen == [f"images.test:{port}"]


def _resolve_name(monkeypatch: pytest.MonkeyPatch, name: str, answers: list[str]) -> list[str]:
    """Make ``name`` resolve to ``answers[0]``, then ``answers[1]`` …; returns the unused ones."""
    real = socket.getaddrinfo
    remaining = list(answers)

    def getaddrinfo(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host == name:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (remaining.pop(0), int(port or 80)))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return remaining


@pytest.mark.parametrize(
    "address, public",
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("198.18.0.1", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("ff02::1", False),
        ("::ffff:127.0.0.1", False),
        ("64:ff9b::7f00:1", False),
        ("64:ff9b::5db8:d822", True),
        ("2002:7f00:1::", False),
    ],
)
def test_public_address_classification(address: str, public: bool) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is public


async def test_allowlist_entries_are_networks_or_host_names(image_server: ImageServer) -> None:
    image_server.routes["/mug.jpg"] = Route(body=jpeg_bytes())
    port = image_server.base_url.rsplit(":", 1)[1]
    by_name = DownloadLimits.allowing("LocalHost.", "10.0.0.0/8")
    assert by_name.allowed_hosts == {"localhost"}
    image = await download_first_image([f"http://localhost:{port}/mug.jpg"], by_name)
    assert image.content_type == "image/jpeg"
    assert image_server.hosts_seen == [f"localhost:{port}"]
    with pytest.raises(PermanentJobError, match=r"resolves to 127\.0\.0\.1"):
        await download_first_image([image_server.url("/mug.jpg")], by_name)
    everything = DownloadLimits.allowing("0.0.0.0/0", "::/0")
    assert (await download_first_image([image_server.url("/mug.jpg")], everything)).width == 64


@pytest.fixture
def tls_files(tmp_path: Path) -> Callable[[str], tuple[Path, Path]]:
    """``make(name)`` writes a self-signed certificate for ``name`` (openssl CLI) → (cert, key)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")

    def make(name: str) -> tuple[Path, Path]:
        cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", f"/CN={name}",
             "-addext", f"subjectAltName=DNS:{name}", "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True,
        )
        return cert, key

    return make


@pytest.mark.parametrize("certificate_name, valid", [("images.test", True), ("other.test", False)])
async def test_https_is_pinned_to_the_address_but_verified_against_the_host_name(
    image_server: ImageServer,
    tls_files: Callable[[str], tuple[Path, Path]],
    monkeypatch: pytest.MonkeyPatch,
    certificate_name: str,
    valid: bool,
) -> None:
    cert, key = tls_files(certificate_name)
    image_server.routes["/mug.jpg"] = Route(body=jpeg_bytes())
    server_names: list[str | None] = []
    port = image_server.enable_tls(cert, key, server_names)
    _resolve_name(monkeypatch, "images.test", ["127.0.0.1"])
    trusting = ssl.create_default_context(cafile=str(cert))
    async with httpx.AsyncClient(verify=trusting, trust_env=False) as client:
        if valid:
            image = await download_first_image([f"https://images.test:{port}/mug.jpg"], LOCAL, client)
            assert image.content_type == "image/jpeg"
            assert image_server.hosts_seen == [f"images.test:{port}"]
        else:
            with pytest.raises(PermanentJobError, match="TLS certificate of images.test is not valid"):
                await download_first_image([f"https://images.test:{port}/mug.jpg"], LOCAL, client)
    assert server_names == ["images.test"], "SNI names the host, not the pinned address"
