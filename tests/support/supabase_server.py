"""A local Supabase Storage server for tests: the endpoints supabase-py (storage3) calls, for real.

It speaks the wire protocol of ``supabase/storage`` (docs/facts.md, "Supabase Storage"), so the
real client library runs against it unchanged:

* ``POST|PUT /storage/v1/object/{bucket}/{path}`` — multipart ``file`` (its part Content-Type is
  the stored MIME type) and ``cacheControl``; POST honours ``x-upsert``, PUT always upserts.
* ``GET /storage/v1/object/public/{bucket}/{path}`` — serves a public bucket's objects without
  credentials, with the stored Content-Type and ``Cache-Control: max-age=N``.
* ``GET /storage/v1/object/{bucket}/{path}`` (authenticated download) and
  ``DELETE /storage/v1/object/{bucket}`` (JSON ``prefixes``).
* ``POST /storage/v1/object/copy`` — JSON ``bucketId``, ``sourceKey``, ``destinationKey`` (and
  optionally ``destinationBucket``): copies the object with its content type and cache control
  (the API's default ``copyMetadata: true``; new ``metadata`` is not served here); an existing
  destination is refused (409 Duplicate) unless ``x-upsert: true``; a missing source is 404
  ``not_found`` (supabase/storage's ``src/http/routes/object/copyObject.ts``).

Errors are storage's own: HTTP 400 (500 for 500) with a body whose ``statusCode`` is a string
("409" Duplicate, "413" Payload too large, "415" invalid_mime_type, "404" Bucket not found,
"403" row-level security for the anon key). A request whose ``apikey`` is not a project key is
refused before storage, as the API gateway does: HTTP 401 ``{"message": "Invalid API key"}``.

Use the ``supabase_storage`` fixture; ``fail_next`` injects outages for retry tests, and ``hold``
stops an upload or copy in mid-air (the test sees it arrive, then kills the worker) for crash tests.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

#: Characters storage accepts in object keys (supabase/storage limits.ts).
_KEY_CHARACTERS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_/!.*'() &$=@;:+,?-"
)
#: The server-wide standard upload limit of the Supabase CLI and the multitenant default.
GLOBAL_FILE_SIZE_LIMIT = 50 * 1024 * 1024


@dataclass
class StoredObject:
    data: bytes
    content_type: str
    cache_control: str
    metadata: dict | None


@dataclass
class Bucket:
    name: str
    public: bool = True
    file_size_limit: int | None = None
    allowed_mime_types: list[str] | None = None
    objects: dict[str, StoredObject] = field(default_factory=dict)


@dataclass
class Hold:
    """An upload or copy to a key ending with ``keys_ending`` that the server holds: ``arrived`` is
    set when it comes; once ``release`` is set the connection is closed, nothing stored."""

    keys_ending: str
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, bytes]
    part_content_type: str | None


class SupabaseStorageServer:
    """The server's state plus its address; each test gets a fresh one from the fixture."""

    def __init__(self, service_role_key: str = "service-role-key-for-tests", anon_key: str = "anon-key-for-tests") -> None:
        self.service_role_key = service_role_key
        self.anon_key = anon_key
        self.buckets: dict[str, Bucket] = {}
        self.requests: list[RecordedRequest] = []
        self._failures: list[tuple[int, bytes, str]] = []
        self._holds: list[Hold] = []
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, name="supabase-storage", daemon=True
        )

    def start(self) -> SupabaseStorageServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()

    def create_bucket(
        self,
        name: str,
        *,
        public: bool = True,
        file_size_limit: int | None = None,
        allowed_mime_types: list[str] | None = None,
    ) -> Bucket:
        bucket = Bucket(name, public, file_size_limit, allowed_mime_types)
        self.buckets[name] = bucket
        return bucket

    def fail_next(self, http_status: int, body: dict | str, times: int = 1, keys_ending: str = "") -> None:
        """Answer the next ``times`` storage requests (for keys ending with ``keys_ending``) with
        this status and body (JSON if a dict)."""
        payload = json.dumps(body).encode() if isinstance(body, dict) else body.encode()
        with self._lock:
            self._failures.extend([(http_status, payload, keys_ending)] * times)

    def hold(self, keys_ending: str) -> Hold:
        """Hold the next upload or copy to a key ending with ``keys_ending`` (see `Hold`)."""
        held = Hold(keys_ending)
        with self._lock:
            self._holds.append(held)
        return held

    def take_hold(self, key: str) -> Hold | None:
        with self._lock:
            for index, held in enumerate(self._holds):
                if key.endswith(held.keys_ending):
                    del self._holds[index]
                    return held
            return None

    def take_failure(self, key: str) -> tuple[int, bytes] | None:
        with self._lock:
            for index, (status, payload, keys_ending) in enumerate(self._failures):
                if key.endswith(keys_ending):
                    del self._failures[index]
                    return status, payload
            return None


@dataclass
class SupabaseStorageFixture:
    """What tests need: where the server is, its credentials, the bucket and the stored objects."""

    server: SupabaseStorageServer
    bucket: str

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def service_role_key(self) -> str:
        return self.server.service_role_key

    @property
    def anon_key(self) -> str:
        return self.server.anon_key

    @property
    def objects(self) -> dict[str, StoredObject]:
        return self.server.buckets[self.bucket].objects

    def public_url(self, key: str) -> str:
        return f"{self.url}/storage/v1/object/public/{self.bucket}/{urllib.parse.quote(key)}"


@pytest.fixture
def supabase_storage() -> Iterator[SupabaseStorageFixture]:
    """A running stand-in with one public bucket ``3d-models`` (no size or MIME restrictions)."""
    server = SupabaseStorageServer().start()
    server.create_bucket("3d-models")
    try:
        yield SupabaseStorageFixture(server, "3d-models")
    finally:
        server.stop()


def _error(status: str, error: str, code: str, message: str) -> tuple[int, dict]:
    """Storage sends every error as HTTP 400 except 500; the real status is the body's string."""
    body = {"statusCode": status, "code": code, "error": error, "message": message}
    return (500 if status == "500" else 400), body


def _mime_allowed(content_type: str, allowed: list[str]) -> bool:
    """Storage's validateMimeType: exact type and subtype, ``*`` only as a subtype."""
    kind, _, subtype = content_type.partition("/")
    for entry in allowed:
        allowed_kind, _, allowed_subtype = entry.partition("/")
        if kind == allowed_kind and allowed_subtype in ("*", subtype):
            return True
    return False


def _make_handler(server: SupabaseStorageServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
            """Keep test output clean."""

        def do_POST(self) -> None:
            self._route("POST")

        def do_PUT(self) -> None:
            self._route("PUT")

        def do_GET(self) -> None:
            self._route("GET")

        def do_DELETE(self) -> None:
            self._route("DELETE")

        def _route(self, method: str) -> None:
            body = self._read_body()
            raw_path = urllib.parse.urlsplit(self.path).path
            prefix = "/storage/v1/object/"
            if not raw_path.startswith(prefix):
                self._send_json(*_error("404", "not_found", "NotFound", f"Route {method}:{raw_path} not found"))
                return
            segments = [urllib.parse.unquote(s) for s in raw_path[len(prefix) :].split("/")]
            if method == "GET" and segments[0] == "public":
                self._public_get(segments[1], "/".join(segments[2:]))
                return
            if (gateway := self._check_api_key()) is not None:
                self._send(401, json.dumps(gateway).encode(), "application/json")
                return
            if method == "POST" and segments == ["copy"]:
                self._copy(body)
                return
            bucket_name, key = segments[0], "/".join(segments[1:])
            failure = server.take_failure(key)
            if failure is not None:
                self._send(failure[0], failure[1], "application/json")
                return
            bucket = server.buckets.get(bucket_name)
            if bucket is None:
                self._send_json(*_error("404", "Bucket not found", "NoSuchBucket", "Bucket not found"))
                return
            if method in ("POST", "PUT") and self._held(key):
                return
            if method in ("POST", "PUT"):
                self._upload(method, bucket, key, body)
            elif method == "GET":
                self._download(bucket, key)
            else:
                self._delete(bucket, body)

        def _held(self, key: str) -> bool:
            """Hold a request `hold` asked for until released, then drop it unanswered."""
            held = server.take_hold(key)
            if held is None:
                return False
            held.arrived.set()
            held.release.wait(120)
            self.close_connection = True
            return True

        def _check_api_key(self) -> dict | None:
            """The gateway refuses unknown keys; storage itself then reads the bearer token."""
            if self.headers.get("apikey") not in (server.service_role_key, server.anon_key):
                return {"message": "Invalid API key", "hint": "Double check your Supabase anon or service_role API key."}
            return None

        def _upload(self, method: str, bucket: Bucket, key: str, body: bytes) -> None:
            form, part_type = self._parse_multipart(body)
            server.requests.append(
                RecordedRequest(method, self.path, {k.lower(): v for k, v in self.headers.items()}, form, part_type)
            )
            token = self.headers.get("authorization", "").removeprefix("Bearer ")
            if token != server.service_role_key:
                self._send_json(
                    *_error("403", "Unauthorized", "AccessDenied", "new row violates row-level security policy")
                )
                return
            if not key or not set(key) <= _KEY_CHARACTERS:
                self._send_json(*_error("400", "InvalidKey", "InvalidKey", f"Invalid key: {key}"))
                return
            if "file" not in form:
                self._send_json(*_error("400", "InvalidRequest", "InvalidRequest", "No content provided"))
                return
            data = form["file"]
            content_type = part_type or "text/plain;charset=UTF-8"
            limit = min(GLOBAL_FILE_SIZE_LIMIT, bucket.file_size_limit or GLOBAL_FILE_SIZE_LIMIT)
            if len(data) > limit:
                self._send_json(
                    *_error("413", "Payload too large", "EntityTooLarge", "The object exceeded the maximum allowed size")
                )
                return
            if bucket.allowed_mime_types and not _mime_allowed(content_type, bucket.allowed_mime_types):
                self._send_json(
                    *_error("415", "invalid_mime_type", "InvalidMimeType", f"mime type {content_type} is not supported")
                )
                return
            upsert = method == "PUT" or self.headers.get("x-upsert", "false").lower() == "true"
            if key in bucket.objects and not upsert:
                self._send_json(*_error("409", "Duplicate", "KeyAlreadyExists", "The resource already exists"))
                return
            cache_control = form.get("cacheControl", b"").decode()
            metadata = json.loads(form["metadata"]) if "metadata" in form else None
            bucket.objects[key] = StoredObject(
                data, content_type, f"max-age={cache_control}" if cache_control else "no-cache", metadata
            )
            self._send_json(200, {"Id": str(uuid.uuid4()), "Key": f"{bucket.name}/{key}"})

        def _copy(self, body: bytes) -> None:
            request = json.loads(body or b"{}")
            server.requests.append(
                RecordedRequest("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, {}, None)
            )
            missing = [name for name in ("bucketId", "sourceKey", "destinationKey") if not request.get(name)]
            if missing:
                self._send_json(*_error("400", "Bad Request", "InvalidRequest",
                                        f"body must have required property '{missing[0]}'"))
                return
            source_key, key = request["sourceKey"], request["destinationKey"]
            if self._held(key):
                return
            failure = server.take_failure(key)
            if failure is not None:
                self._send(failure[0], failure[1], "application/json")
                return
            if self.headers.get("authorization", "").removeprefix("Bearer ") != server.service_role_key:
                self._send_json(
                    *_error("403", "Unauthorized", "AccessDenied", "new row violates row-level security policy")
                )
                return
            source_bucket = server.buckets.get(request["bucketId"])
            target_bucket = server.buckets.get(request.get("destinationBucket") or request["bucketId"])
            if source_bucket is None or target_bucket is None:
                self._send_json(*_error("404", "Bucket not found", "NoSuchBucket", "Bucket not found"))
                return
            if not set(key) <= _KEY_CHARACTERS:
                self._send_json(*_error("400", "InvalidKey", "InvalidKey", f"Invalid key: {key}"))
                return
            source = source_bucket.objects.get(source_key)
            if source is None:
                self._send_json(*_error("404", "not_found", "NoSuchKey", "Object not found"))
                return
            if key in target_bucket.objects and self.headers.get("x-upsert", "false").lower() != "true":
                self._send_json(*_error("409", "Duplicate", "KeyAlreadyExists", "The resource already exists"))
                return
            assert "metadata" not in request and request.get("copyMetadata", True), "not served by the stand-in"
            target_bucket.objects[key] = StoredObject(source.data, source.content_type, source.cache_control,
                                                      source.metadata)
            self._send_json(200, {"Id": str(uuid.uuid4()), "Key": f"{target_bucket.name}/{key}", "name": key,
                                  "bucket_id": target_bucket.name})

        def _public_get(self, bucket_name: str, key: str) -> None:
            bucket = server.buckets.get(bucket_name)
            if bucket is None or not bucket.public:
                self._send_json(*_error("404", "Bucket not found", "NoSuchBucket", "Bucket not found"))
                return
            self._download(bucket, key)

        def _download(self, bucket: Bucket, key: str) -> None:
            stored = bucket.objects.get(key)
            if stored is None:
                self._send_json(*_error("404", "not_found", "NoSuchKey", "Object not found"))
                return
            self._send(200, stored.data, stored.content_type, {"Cache-Control": stored.cache_control})

        def _delete(self, bucket: Bucket, body: bytes) -> None:
            prefixes = json.loads(body or b"{}").get("prefixes", [])
            removed = [{"name": key, "bucket_id": bucket.name} for key in prefixes if bucket.objects.pop(key, None)]
            self._send_json(200, removed)

        def _parse_multipart(self, body: bytes) -> tuple[dict[str, bytes], str | None]:
            """Form fields by name, and the Content-Type header of the ``file`` part as sent."""
            content_type = self.headers.get("content-type", "")
            if not content_type.startswith("multipart/form-data"):
                return {}, None
            message = BytesParser(policy=HTTP).parsebytes(
                f"Content-Type: {content_type}\r\n\r\n".encode() + body
            )
            form: dict[str, bytes] = {}
            part_type = None
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                form[name] = part.get_payload(decode=True) or b""
                if name == "file":
                    part_type = part.get("content-type")
            return form, part_type

        def _read_body(self) -> bytes:
            if self.headers.get("transfer-encoding", "").lower() == "chunked":
                chunks = []
                while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("content-length") or 0))

        def _send_json(self, status: int, body: dict | list) -> None:
            self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler
