"""Where finished files go: Supabase Storage (production) or a local directory (development).

Both backends take an object key (a job's :func:`storage_stem` plus the file's extension) and a
content type, and return the public URL the webhook reports. Uploads overwrite (upsert): a key
names one file of one job, so a retried job rewrites its own objects and never creates others.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
import urllib.parse
from pathlib import Path
from collections.abc import Sequence
from typing import Protocol

import httpx
from storage3.exceptions import StorageApiError
from supabase import AsyncClient, AsyncClientOptions, acreate_client

from client_worker.config import Settings
from client_worker.errors import PermanentJobError, TransientJobError
from client_worker.jobs import ids


class Storage(Protocol):
    """Stores one file under ``key`` (overwriting) and returns the URL it is publicly served at."""

    async def upload(self, key: str, data: bytes, content_type: str) -> str: ...

    async def copy(self, source_key: str, key: str) -> str:
        """Store a copy of the object ``source_key`` (bytes and content type) under ``key`` (overwriting)
        and return its URL.

        Raises:
            PermanentJobError: there is no object ``source_key``, or the copy is refused.
            TransientJobError: the storage is unavailable.
        """

    async def delete(self, keys: Sequence[str]) -> None:
        """Remove the objects ``keys``; one that does not exist is no error (a removal may be repeated).

        Raises:
            PermanentJobError: the storage refuses the removal (credentials).
            TransientJobError: the storage is unavailable.
        """


def make_storage(settings: Settings) -> Storage:
    """The storage backend ``STORAGE_BACKEND`` names."""
    if settings.storage_backend == "local":
        return LocalStorage(settings.local_storage_dir or ".", settings.local_storage_public_url)
    assert settings.supabase_url and settings.supabase_service_role_key  # checked by storage_problem()
    return SupabaseStorage(
        settings.supabase_url,
        settings.supabase_service_role_key.get_secret_value(),
        settings.supabase_bucket_name,
        cache_control_seconds=settings.storage_cache_control_s,
    )


_SAFE_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
STORAGE_KEY_MAX_BYTES = 1024
"""Supabase Storage keeps objects in S3, whose keys are at most 1024 bytes (docs/facts.md, "Supabase Storage")."""


def storage_stem(shop: str, product_id: str | int, variant_id: str | int | None, job_id: str) -> str:
    """The key stem of a job's files, ``{shop}/products/{id}[/variants/{id}]/{job}``: each file's
    key is the stem plus its extension (``.glb``).

    Deterministic, so a retry of the same job overwrites its objects, and the job id is part of
    it, so two jobs for the same product never share one. Shopify GIDs
    (``gid://shopify/Product/123``) are reduced to their numeric id: storage3 would silently drop
    the empty segment of ``//``. Each segment is checked against a conservative character set
    (no ``/``, no ``..``, nothing Supabase refuses); one that is not safe as given is replaced by
    a slug plus a hash of the original, so distinct inputs still give distinct keys.

    Raises:
        PermanentJobError: the shop is empty, or an id is neither a Shopify GID nor a number.
    """
    shop_segment = _safe_segment(shop.strip().lower(), "shop")
    parts = [shop_segment, "products", _numeric_id(product_id, "product_id")]
    if variant_id is not None and str(variant_id).strip():
        parts += ["variants", _numeric_id(variant_id, "variant_id")]
    return "/".join(parts) + f"/{_safe_segment(str(job_id), 'job_id')}"


def _numeric_id(value: str | int, field: str) -> str:
    """``gid://shopify/Product/123`` or ``123`` → ``"123"``; anything else is a bad job (intake
    refuses such jobs already; this guards callers that build keys from other input)."""
    try:
        return ids.shopify_number(str(value).strip())
    except ValueError as error:
        raise PermanentJobError(f"{field} {error}") from None


def _safe_segment(text: str, field: str) -> str:
    """Return ``text`` if it is a safe single path segment, else a slug with a hash suffix."""
    if _SAFE_SEGMENT.fullmatch(text) and ".." not in text:
        return text
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-_")[:64]
    if not slug:
        raise PermanentJobError(f"{field} {text[:100]!r} has no letters or digits to name the stored model by")
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{slug}-{digest}"


def _kind(key: str) -> str:
    """What a key holds, for messages: ``GLB`` for ``….glb``."""
    return key.rsplit(".", 1)[-1].upper() if "." in key.rsplit("/", 1)[-1] else "file"


def _check_key(key: str) -> list[str]:
    """Split a key into segments, refusing absolute paths, empty and dot segments, and over-long keys."""
    segments = key.split("/")
    if not key or any(segment in ("", ".", "..") for segment in segments) or "\\" in key:
        raise PermanentJobError(f"refusing unsafe storage key {key[:200]!r}: use storage_stem() to build keys")
    if len(key.encode("utf-8", "surrogatepass")) > STORAGE_KEY_MAX_BYTES:
        raise PermanentJobError(f"refusing a storage key of more than {STORAGE_KEY_MAX_BYTES} bytes: {key[:100]!r}…")
    return segments


class SupabaseStorage:
    """Uploads through supabase-py's async client (storage3) to one public bucket.

    The bucket must exist and be public for the returned URL to work; uploads use the service-role
    key, which bypasses row-level security. The client is created on first use because
    ``acreate_client`` is a coroutine; call :meth:`aclose` on shutdown.
    """

    def __init__(
        self,
        url: str,
        service_role_key: str,
        bucket: str,
        *,
        cache_control_seconds: int = Settings.default("storage_cache_control_s"),
        timeout_s: float = 60.0,
    ) -> None:
        self._url = url
        self._key = service_role_key
        self.bucket = bucket
        self._cache_control = str(cache_control_seconds)
        self._http = httpx.AsyncClient(timeout=timeout_s, follow_redirects=True)
        self._client: AsyncClient | None = None
        self._client_lock = asyncio.Lock()

    async def _supabase(self) -> AsyncClient:
        async with self._client_lock:
            if self._client is None:
                options = AsyncClientOptions(httpx_client=self._http)
                self._client = await acreate_client(self._url, self._key, options=options)
            return self._client

    async def upload(self, key: str, data: bytes, content_type: str) -> str:
        """Upload (upsert) ``data`` as ``content_type`` and return its public URL.

        Raises:
            PermanentJobError: the bucket refuses the object (missing bucket, too large, MIME type
                not allowed, bad key or credentials); the message names the bucket and the fix.
            TransientJobError: timeouts, connection errors, 5xx, 429 and lock timeouts.
        """
        _check_key(key)
        bucket = (await self._supabase()).storage.from_(self.bucket)
        file_options = {
            "content-type": content_type,
            "cache-control": self._cache_control,
            "upsert": "true",
        }
        try:
            await bucket.upload(key, data, file_options)
        except StorageApiError as error:
            raise self._map_api_error(error, key, len(data), content_type) from error
        except httpx.TimeoutException as error:
            raise TransientJobError(
                f"upload of {key} to Supabase bucket {self.bucket!r} timed out: {error!r}"
            ) from error
        except httpx.TransportError as error:
            raise TransientJobError(
                f"upload of {key} to Supabase bucket {self.bucket!r} failed to connect: {error!r}"
            ) from error
        return await bucket.get_public_url(key)

    async def copy(self, source_key: str, key: str) -> str:
        """Copy ``source_key`` to ``key`` within the bucket (Supabase's ``POST /storage/v1/object/copy``,
        which keeps the source's content type and cache control) and return the copy's public URL.

        Like an upload, the copy replaces an object already at ``key`` (a retry's): storage3's copy
        sends no ``x-upsert``, so Storage refuses it (409) and the object is removed and copied again.

        Raises:
            PermanentJobError: the source does not exist (404), or Storage refuses the copy.
            TransientJobError: timeouts, connection errors, 5xx and 429.
        """
        _check_key(source_key)
        _check_key(key)
        bucket = (await self._supabase()).storage.from_(self.bucket)
        try:
            try:
                await bucket.copy(source_key, key)
            except StorageApiError as error:
                if str(error.status) != "409":
                    raise
                await bucket.remove([key])
                await bucket.copy(source_key, key)
        except StorageApiError as error:
            status = str(error.status)
            message = (f"Supabase bucket {self.bucket!r} did not copy {source_key!r} to {key!r}, "
                       f"status {status} ({error.code}: {error.message})")
            if status == "429" or status.startswith("5"):
                raise TransientJobError(message) from error
            raise PermanentJobError(message) from error
        except httpx.TransportError as error:  # timeouts included
            raise TransientJobError(
                f"copy of {source_key} in Supabase bucket {self.bucket!r} failed: {error!r}"
            ) from error
        return await bucket.get_public_url(key)

    async def delete(self, keys: Sequence[str]) -> None:
        """Remove ``keys`` from the bucket (``DELETE /storage/v1/object/{bucket}``, which skips keys
        that hold nothing).

        Raises:
            PermanentJobError: Storage refuses the removal.
            TransientJobError: timeouts, connection errors, 5xx and 429.
        """
        for key in keys:
            _check_key(key)
        if not keys:
            return
        bucket = (await self._supabase()).storage.from_(self.bucket)
        try:
            await bucket.remove(list(keys))
        except StorageApiError as error:
            status = str(error.status)
            message = (f"Supabase bucket {self.bucket!r} did not remove {len(keys)} objects, "
                       f"status {status} ({error.code}: {error.message})")
            if status == "429" or status.startswith("5"):
                raise TransientJobError(message) from error
            raise PermanentJobError(message) from error
        except httpx.TransportError as error:  # timeouts included
            raise TransientJobError(f"removal of objects from Supabase bucket {self.bucket!r} failed: {error!r}") from error

    def _map_api_error(self, error: StorageApiError, key: str, size: int, content_type: str) -> Exception:
        """Turn storage3's error (status = the body's string ``statusCode``) into a job error."""
        status = str(error.status)
        where = f"Supabase bucket {self.bucket!r}"
        detail = f"({error.code}: {error.message})"
        permanent = {
            "400": f"{where} refused the key {key!r} {detail}",
            "401": f"{where} refused the credentials {detail}: set SUPABASE_SERVICE_ROLE_KEY to the "
            "project's service_role key",
            "403": f"{where} denied the upload {detail}: set SUPABASE_SERVICE_ROLE_KEY to the "
            "project's service_role key (the anon key is subject to row-level security)",
            "404": f"{where} does not exist {detail}: create it as a public bucket or set "
            "SUPABASE_BUCKET_NAME",
            "409": f"{where} already holds {key!r} and refused to overwrite it {detail}",
            "413": f"the {_kind(key)} of {size} bytes exceeds the maximum object size of {where} {detail}: "
            "raise the bucket's file size limit or use a lower quality preset",
            "415": f"{where} does not accept {content_type} {detail}: add {content_type} "
            f"(or {content_type.split('/')[0]}/*) to the bucket's allowed MIME types",
        }
        if status in permanent:
            return PermanentJobError(permanent[status])
        if status == "429" or status.startswith("5"):
            return TransientJobError(f"{where} is temporarily unavailable, HTTP {status} {detail}")
        return PermanentJobError(f"{where} rejected the upload of {key!r}, status {status} {detail}")

    async def aclose(self) -> None:
        """Close the HTTP connections (the supabase client shares our httpx client)."""
        await self._http.aclose()


class LocalStorage:
    """Writes files below a directory, for development and tests without Supabase.

    ``public_base_url`` is the URL that serves ``directory`` (e.g. an nginx location); without it
    the returned URL is the file's ``file://`` URI, which is only meaningful on this machine.
    """

    def __init__(self, directory: str | os.PathLike[str], public_base_url: str | None = None) -> None:
        self.directory = Path(directory).resolve()
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None

    async def upload(self, key: str, data: bytes, content_type: str) -> str:
        """Write ``data`` atomically (temporary file, then rename) and return its URL.

        A directory keeps no content type; the server in front of it derives it from the extension.
        """
        segments = _check_key(key)
        target = self.directory.joinpath(*segments)
        await asyncio.to_thread(_write_atomically, target, data)
        if self.public_base_url is None:
            return target.as_uri()
        return f"{self.public_base_url}/{urllib.parse.quote(key)}"

    async def copy(self, source_key: str, key: str) -> str:
        """Write a copy of the file ``source_key`` under ``key`` (atomically) and return its URL.

        Raises:
            PermanentJobError: there is no file ``source_key``.
        """
        source = self.directory.joinpath(*_check_key(source_key))
        try:
            data = await asyncio.to_thread(source.read_bytes)
        except FileNotFoundError as error:
            raise PermanentJobError(f"there is no file {source_key!r} in {self.directory} to copy") from error
        return await self.upload(key, data, "")

    async def delete(self, keys: Sequence[str]) -> None:
        """Remove the files ``keys`` (a missing one is skipped)."""
        paths = [self.directory.joinpath(*_check_key(key)) for key in keys]
        for path in paths:
            await asyncio.to_thread(path.unlink, missing_ok=True)


def _write_atomically(target: Path, data: bytes) -> None:
    """Readers see the old file or the complete new one, never a partial file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
