"""Storage: the real supabase-py client against the local Storage stand-in, the local backend, keys."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from asset.glb import CONTENT_TYPE, EXTENSION
from client_worker.errors import PermanentJobError, TransientJobError
from client_worker.storage import LocalStorage, SupabaseStorage, storage_stem
from tests.support.supabase_server import SupabaseStorageFixture

GLB = b"glTF\x02\x00\x00\x00" + bytes(range(256)) * 8


@pytest.fixture
async def storage(supabase_storage: SupabaseStorageFixture) -> AsyncIterator[SupabaseStorage]:
    client = SupabaseStorage(supabase_storage.url, supabase_storage.service_role_key, supabase_storage.bucket)
    yield client
    await client.aclose()


async def test_upload_returns_a_public_url_serving_the_glb(
    storage: SupabaseStorage, supabase_storage: SupabaseStorageFixture
) -> None:
    url = await storage.upload("shop.myshopify.com/products/123/job-1.glb", GLB, CONTENT_TYPE)
    assert url == supabase_storage.public_url("shop.myshopify.com/products/123/job-1.glb")
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
    assert response.status_code == 200
    assert response.content == GLB
    assert response.headers["content-type"] == "model/gltf-binary"
    assert response.headers["cache-control"] == "max-age=31536000"
    [request] = supabase_storage.server.requests
    assert request.headers["x-upsert"] == "true"
    assert request.headers["apikey"] == supabase_storage.service_role_key
    assert request.headers["authorization"] == f"Bearer {supabase_storage.service_role_key}"


async def test_a_retry_overwrites_the_same_object(
    storage: SupabaseStorage, supabase_storage: SupabaseStorageFixture
) -> None:
    key = "shop.myshopify.com/products/123/job-1.glb"
    await storage.upload(key, b"first attempt", CONTENT_TYPE)
    url = await storage.upload(key, GLB, CONTENT_TYPE)
    assert list(supabase_storage.objects) == [key]
    assert supabase_storage.objects[key].data == GLB
    assert httpx.get(url).content == GLB


async def test_size_limit_maps_to_a_permanent_error_naming_the_bucket(
    supabase_storage: SupabaseStorageFixture, storage: SupabaseStorage
) -> None:
    supabase_storage.server.create_bucket("3d-models", file_size_limit=1000)
    with pytest.raises(PermanentJobError, match=r"GLB of 2056 bytes exceeds the maximum object size of Supabase bucket '3d-models'"):
        await storage.upload("s/products/1/j.glb", GLB, CONTENT_TYPE)


async def test_mime_allow_list_maps_to_a_permanent_error(
    supabase_storage: SupabaseStorageFixture, storage: SupabaseStorage
) -> None:
    supabase_storage.server.create_bucket("3d-models", allowed_mime_types=["image/png"])
    with pytest.raises(PermanentJobError, match=r"does not accept model/gltf-binary.*allowed MIME types"):
        await storage.upload("s/products/1/j.glb", GLB, CONTENT_TYPE)
    supabase_storage.server.create_bucket("3d-models", allowed_mime_types=["model/*"])
    assert (await storage.upload("s/products/1/j.glb", GLB, CONTENT_TYPE)).endswith("/s/products/1/j.glb")


async def test_duplicate_maps_to_a_permanent_error(
    supabase_storage: SupabaseStorageFixture, storage: SupabaseStorage
) -> None:
    supabase_storage.server.fail_next(
        400, {"statusCode": "409", "error": "Duplicate", "code": "KeyAlreadyExists", "message": "The resource already exists"}
    )
    with pytest.raises(PermanentJobError, match=r"already holds 's/products/1/j.glb'.*Duplicate"):
        await storage.upload("s/products/1/j.glb", GLB, CONTENT_TYPE)


async def test_missing_bucket_maps_to_a_permanent_error(supabase_storage: SupabaseStorageFixture) -> None:
    storage = SupabaseStorage(supabase_storage.url, supabase_storage.service_role_key, "no-such-bucket")
    try:
        with pytest.raises(PermanentJobError, match=r"bucket 'no-such-bucket' does not exist.*SUPABASE_BUCKET_NAME"):
            await storage.upload("s/products/1/j.glb", GLB, CONTENT_TYPE)
    finally:
        await storage.aclose()


@pytest.mark.parametrize(
    "which, message",
    [
        ("wrong", r"refused the credentials.*Invalid API key.*SUPABASE_SERVICE_ROLE_KEY"),
        ("anon", r"denied the upload.*row-level security.*service_role key"),
    ],
)
async def test_bad_credentials_map_to_permanent_errors(
    supabase_storage: SupabaseStorageFixture, which: str, message: str
) -> None:
    key = supabase_storage.anon_key if which == "anon" else "not-a-project-key"
    storage = SupabaseStorage(supabase_storage.url, key, supabase_storage.bucket)
    try:
        with pytest.raises(PermanentJobError, match=message):
            await storage.upload("s/products/1/j.glb", GLB, CONTENT_TYPE)
    finally:
        await storage.aclose()
    assert supabase_storage.objects == {}


@pytest.mark.parametrize(
    "http_status, body",
    [
        (500, {"statusCode": "500", "error": "internal", "code": "InternalError", "message": "boom"}),
        (400, {"statusCode": "503", "error": "acquiring_lock_timeout", "code": "LockTimeout", "message": "acquiring lock timeout"}),
        (429, {"statusCode": "429", "error": "too_many_connections", "code": "SlowDown", "message": "slow down"}),
        (502, "<html><body>502 Bad Gateway</body></html>"),
    ],
)
async def test_server_trouble_is_transient_and_the_retry_succeeds(
    supabase_storage: SupabaseStorageFixture, storage: SupabaseStorage, http_status: int, body: dict | str
) -> None:
    supabase_storage.server.fail_next(http_status, body)
    with pytest.raises(TransientJobError, match="temporarily unavailable"):
        await storage.upload("s/products/1/j.glb", GLB, CONTENT_TYPE)
    await storage.upload("s/products/1/j.glb", GLB, CONTENT_TYPE)
    assert supabase_storage.objects["s/products/1/j.glb"].data == GLB


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    yield listener.getsockname()[1]
    listener.close()


async def test_timeouts_and_refused_connections_are_transient(silent_port: int) -> None:
    storage = SupabaseStorage(f"http://127.0.0.1:{silent_port}", "key", "3d-models", timeout_s=0.3)
    try:
        with pytest.raises(TransientJobError, match="timed out"):
            await storage.upload("s/products/1/j.glb", GLB, CONTENT_TYPE)
    finally:
        await storage.aclose()
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    storage = SupabaseStorage(f"http://127.0.0.1:{port}", "key", "3d-models")
    try:
        with pytest.raises(TransientJobError, match="failed to connect"):
            await storage.upload("s/products/1/j.glb", GLB, CONTENT_TYPE)
    finally:
        await storage.aclose()


async def test_unsafe_keys_are_refused_before_any_request(storage: SupabaseStorage) -> None:
    for key in ("../etc/passwd.glb", "/abs.glb", "a//b.glb", "a/./b.glb", ""):
        with pytest.raises(PermanentJobError, match="unsafe storage key"):
            await storage.upload(key, GLB, CONTENT_TYPE)


async def test_local_storage_writes_atomically_and_overwrites(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "models", "https://models.example.com/files/")
    key = "shop.myshopify.com/products/1/job 1.glb"
    url = await storage.upload(key, b"first", CONTENT_TYPE)
    assert url == "https://models.example.com/files/shop.myshopify.com/products/1/job%201.glb"
    await storage.upload(key, GLB, CONTENT_TYPE)
    target = tmp_path / "models" / key
    assert target.read_bytes() == GLB
    assert sorted(p.name for p in target.parent.iterdir()) == ["job 1.glb"], "no temporary files left behind"
    assert (await LocalStorage(tmp_path / "models").upload(key, GLB, CONTENT_TYPE)) == target.as_uri()
    with pytest.raises(PermanentJobError, match="unsafe storage key"):
        await storage.upload("../outside.glb", GLB, CONTENT_TYPE)
    assert not (tmp_path / "outside.glb").exists()


async def test_copy_stores_the_same_bytes_and_headers_under_the_new_key(
    storage: SupabaseStorage, supabase_storage: SupabaseStorageFixture
) -> None:
    source, key = "shop.myshopify.com/products/123/job-1.glb", "shop.myshopify.com/products/123/job-2.glb"
    await storage.upload(source, GLB, CONTENT_TYPE)
    url = await storage.copy(source, key)
    assert url == supabase_storage.public_url(key)
    response = httpx.get(url)
    assert response.content == GLB
    assert response.headers["content-type"] == CONTENT_TYPE
    assert response.headers["cache-control"] == "max-age=31536000"
    copy_request = supabase_storage.server.requests[-1]
    assert copy_request.path == "/storage/v1/object/copy"
    assert copy_request.headers["authorization"] == f"Bearer {supabase_storage.service_role_key}"


async def test_copy_overwrites_like_an_upload_a_missing_source_is_permanent_and_outages_transient(
    storage: SupabaseStorage, supabase_storage: SupabaseStorageFixture
) -> None:
    with pytest.raises(PermanentJobError, match=r"did not copy 's/products/1/gone.glb' .* status 404"):
        await storage.copy("s/products/1/gone.glb", "s/products/1/j.glb")
    await storage.upload("s/products/1/a.glb", GLB, CONTENT_TYPE)
    await storage.upload("s/products/1/b.glb", b"an earlier attempt's", CONTENT_TYPE)
    await storage.copy("s/products/1/a.glb", "s/products/1/b.glb")
    assert supabase_storage.objects["s/products/1/b.glb"].data == GLB
    refused, copied = supabase_storage.server.requests[-2:]  # 409, then the copy after the removal
    assert refused.path == copied.path == "/storage/v1/object/copy"
    supabase_storage.server.fail_next(503, {"statusCode": "503", "code": "SlowDown", "error": "x", "message": "y"},
                                      keys_ending="c.glb")
    with pytest.raises(TransientJobError, match="status 503"):
        await storage.copy("s/products/1/a.glb", "s/products/1/c.glb")
    await storage.copy("s/products/1/a.glb", "s/products/1/c.glb")
    assert supabase_storage.objects["s/products/1/c.glb"].data == GLB


async def test_local_storage_copies_and_says_when_the_source_is_gone(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path, "https://models.example.com")
    await storage.upload("s/products/1/a.glb", GLB, CONTENT_TYPE)
    url = await storage.copy("s/products/1/a.glb", "s/products/2/b.glb")
    assert url == "https://models.example.com/s/products/2/b.glb"
    assert (tmp_path / "s/products/2/b.glb").read_bytes() == GLB
    with pytest.raises(PermanentJobError, match="no file 's/products/1/gone.glb'"):
        await storage.copy("s/products/1/gone.glb", "s/products/2/c.glb")


def test_storage_key_from_the_guide_payload() -> None:
    assert (
        (storage_stem("test-shop.myshopify.com", "gid://shopify/Product/123", None, "9b2f0c1e-0d7a-4c1e-8a53-2b0c4f7e6a10") + EXTENSION)
        == "test-shop.myshopify.com/products/123/9b2f0c1e-0d7a-4c1e-8a53-2b0c4f7e6a10.glb"
    )
    assert (
        (storage_stem("Shop-Name.MyShopify.com", "gid://shopify/Product/123456789", "gid://shopify/ProductVariant/987654321", "job-1") + EXTENSION)
        == "shop-name.myshopify.com/products/123456789/variants/987654321/job-1.glb"
    )
    assert (storage_stem("s.myshopify.com", 42, "", "j") + EXTENSION) == "s.myshopify.com/products/42/j.glb"


def test_storage_key_is_deterministic_and_distinct_per_job() -> None:
    first = (storage_stem("s.myshopify.com", "gid://shopify/Product/1", None, "job-a") + EXTENSION)
    assert first == (storage_stem("s.myshopify.com", "gid://shopify/Product/1", None, "job-a") + EXTENSION)
    assert first != (storage_stem("s.myshopify.com", "gid://shopify/Product/1", None, "job-b") + EXTENSION)
    assert (storage_stem("s", "1", None, "a/b") + EXTENSION) != (storage_stem("s", "1", None, "a_b") + EXTENSION)


@pytest.mark.parametrize(
    "shop, job_id",
    [("../../etc", "job"), ("shop", "../../../etc/passwd"), ("shop/evil", "a/../b"), ("shop", ".hidden")],
)
def test_storage_key_neutralises_traversal(shop: str, job_id: str) -> None:
    key = (storage_stem(shop, "1", None, job_id) + EXTENSION)
    segments = key.split("/")
    assert len(segments) == 4
    assert all(segment and not segment.startswith(".") for segment in segments)


@pytest.mark.parametrize("product_id", ["gid://shopify/Product/abc", "coffee-mug", "", "gid://other/Product/1"])
def test_storage_key_refuses_ids_that_are_not_shopify_ids(product_id: str) -> None:
    with pytest.raises(PermanentJobError, match="product_id must be a Shopify GID like gid://shopify/Product/123"):
        (storage_stem("s.myshopify.com", product_id, None, "job") + EXTENSION)


def test_storage_key_refuses_an_empty_shop() -> None:
    with pytest.raises(PermanentJobError, match="shop '' has no letters or digits"):
        (storage_stem("  ", "1", None, "job") + EXTENSION)


@pytest.mark.parametrize("product_id", ["7" * 5000, "gid://shopify/Product/" + "1" * 21])
def test_storage_key_refuses_ids_longer_than_any_shopify_id(product_id: str) -> None:
    with pytest.raises(PermanentJobError, match=r"is a number of \d+ digits; Shopify ids have at most 20"):
        storage_stem("s.myshopify.com", product_id, None, "job")
