"""Worker configuration, read once from the environment (and an optional `.env` file).

The five variables of the backend's integration guide keep their exact names (`REDIS_URL`,
`SUPABASE_URL`, `SUPABASE_SERVICE_ROLE_KEY`, `SUPABASE_BUCKET_NAME`, `BACKEND_URL`); everything
else is ours and documented in `.env.example`. Validation happens at start-up so that a typo
stops the worker with a message naming the variable, instead of failing the first job an hour
later.

Which settings are credentials is said here, by their types, and nowhere else: keys are
`SecretStr`, and URLs that may carry a user and password are `CredentialURL`.
`Settings.credentials()` lists what they hold, and every place that shows a setting, a log line or
an error text redacts from it (`client_worker/redaction.py`).
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from collections.abc import Iterator
from typing import Annotated, Any, Literal, get_args
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from asset.real_size import MAX_SIZE_M, MIN_SIZE_M
from client_worker.jobs.keys import RedisKeys
from client_worker.pipeline.presets import PRESETS
from img2mesh.contract import ENSEMBLE, MAX_IMAGE_PIXELS, RESOLUTION

HOST_NAME_MAX_CHARS = 253
"""RFC 1035's limit on a host name."""
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOST_NAME = re.compile(rf"(?=.{{1,{HOST_NAME_MAX_CHARS}}}$){_LABEL}(\.{_LABEL})*\.?")
_HEX_ESCAPE = re.compile(r"\\x([0-9A-Fa-f]{2})")

PhotoCheckMode = Literal["strict", "warn", "off"]
"""What the worker does with the photo check's verdicts (`PHOTO_CHECK`, docs/photo-check.md)."""
QualityCheckMode = Literal["off", "report", "review", "strict"]
"""What the worker does with the check of each asset against its photo (`QUALITY_CHECK`, docs/quality-check.md)."""


class _Credentials:
    """Marks a URL setting whose user info (`user:password@`, or a token as the user) is a credential."""


CredentialURL = Annotated[str, _Credentials()]


def url_credentials(url: str) -> list[str]:
    """The credentials a URL carries: the password and `user:password`, or a lone user (a token),
    each as written and percent-decoded."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    if not userinfo:
        return []
    found = [userinfo] if parts.password is None else [parts.password, userinfo]
    return found + [unquote(text) for text in found]


def _is_credential_url(annotation: Any, metadata: list[Any]) -> bool:
    return any(isinstance(item, _Credentials) for item in metadata) or any(
        _is_credential_url(argument, list(getattr(argument, "__metadata__", ()))) for argument in get_args(annotation)
    )


class ConfigError(Exception):
    """The environment does not describe a runnable worker; the message names each bad variable."""


class Settings(BaseSettings):
    """Every knob of the worker; field names are the environment variable names, lower-cased."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # --- the backend's integration guide ---------------------------------------------------
    redis_url: CredentialURL = Field(default="redis://localhost:6379", repr=False)
    supabase_url: CredentialURL | None = Field(default=None, repr=False)
    supabase_service_role_key: SecretStr | None = None
    supabase_bucket_name: str = "3d-models"
    backend_url: CredentialURL = Field(default="http://localhost:5000", repr=False)

    # --- queue -----------------------------------------------------------------------------
    queue_name: str = "celery"
    # kombu's broker_transport_options of the producers: the priority steps and the separator of
    # the priority lists (docs/facts.md, "Celery messages on Redis").
    priority_steps: Annotated[list[int], NoDecode] = Field(default_factory=lambda: [0, 3, 6, 9])
    priority_separator: str = Field(default="\x06\x16", min_length=1)
    task_name: str = "generate_3d_model"
    key_prefix: str = "img2mesh"
    # Empty: the lists RedisKeys names under KEY_PREFIX.
    rejected_list: str = Field(default="", validate_default=True)
    dead_letter_list: str = Field(default="", validate_default=True)
    worker_name: str = Field(default_factory=socket.gethostname, min_length=1)
    concurrency: int = Field(default=4, ge=1, le=64)
    max_attempts: int = Field(default=5, ge=1, le=50)
    retry_base_delay_s: float = Field(default=5.0, gt=0)
    retry_max_delay_s: float = Field(default=600.0, gt=0)
    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    heartbeat_ttl_s: float = Field(default=30.0, gt=0)
    maintenance_interval_s: float = Field(default=2.0, gt=0)
    idempotency_ttl_s: int = Field(default=30 * 24 * 3600, ge=60)
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    job_timeout_s: float = Field(default=900.0, gt=0)
    redis_timeout_s: float = Field(default=10.0, gt=1)

    # --- limits on what a message may hold ------------------------------------------------
    message_max_bytes: int = Field(default=1024 * 1024, ge=1024)
    message_max_decompressed_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    message_max_depth: int = Field(default=64, ge=8, le=500)
    image_urls_max: int = Field(default=10, ge=1, le=1000)
    image_url_max_length: int = Field(default=2048, ge=64)

    # --- Celery result backend ---------------------------------------------------------------
    result_backend_url: CredentialURL | None = Field(default=None, repr=False)
    result_expires_s: int = Field(default=24 * 3600, ge=60)

    # --- Triton ----------------------------------------------------------------------------
    triton_url: str = "localhost:8001"
    triton_model_name: str = ENSEMBLE
    triton_model_version: str = ""
    # TripoSR weights version (the exporter's number, returned as WEIGHTS_VERSION) a job must be
    # made with; empty follows whatever version ops rolled Triton to.
    triton_weights_version: str = ""
    triton_timeout_s: float = Field(default=300.0, gt=0)
    triton_ready_timeout_s: float = Field(default=120.0, ge=0)

    # --- presets and mesh ------------------------------------------------------------------
    default_preset: Literal[tuple(PRESETS)] = "balanced"  # type: ignore[valid-type]
    max_resolution: int = Field(default=RESOLUTION.maximum, ge=RESOLUTION.minimum, le=RESOLUTION.maximum)
    # Real size of a product whose job gives none (metadata.size): its largest side, in metres.
    default_largest_side_m: float = Field(default=0.3, ge=MIN_SIZE_M, le=MAX_SIZE_M)

    # --- image download --------------------------------------------------------------------
    download_connect_timeout_s: float = Field(default=5.0, gt=0)
    download_read_timeout_s: float = Field(default=15.0, gt=0)
    download_total_timeout_s: float = Field(default=60.0, gt=0)
    download_max_bytes: int = Field(default=25 * 1024 * 1024, gt=0)
    download_max_redirects: int = Field(default=5, ge=0, le=20)
    download_max_pixels: int = Field(default=MAX_IMAGE_PIXELS, gt=0)
    download_job_timeout_s: float = Field(default=120.0, gt=0)
    download_allowlist: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # --- photo choice (docs/photo-check.md) --------------------------------------------------
    # strict: mesh the best usable candidate, fail the job when none is; warn: mesh the best one
    # anyway and report its problems; off: mesh the first photo that downloads, unchecked.
    photo_check: PhotoCheckMode = "strict"
    # How many usable photos are looked for among a job's URLs (in order, up to IMAGE_URLS_MAX) before
    # the best is meshed: each photo checked costs a download and a U²-Net pass.
    photo_candidates: int = Field(default=4, ge=1, le=32)

    # --- the asset's check against its photo (docs/quality-check.md) -------------------------
    # off: no check; report: measure only; review: complete a job under the thresholds with
    # quality.verdict "review" and its reasons; strict: fail it. review and strict first try the
    # next preset once where a finer grid may help.
    quality_check: QualityCheckMode = "review"

    # --- storage ---------------------------------------------------------------------------
    storage_backend: Literal["supabase", "local"] = "supabase"
    local_storage_dir: str | None = None
    local_storage_public_url: str | None = None
    # A key names one job's output and is never reused for other content, so CDNs and browsers
    # may cache it for a year.
    storage_cache_control_s: int = Field(default=31_536_000, ge=0)
    # How long a finished asset is offered to later jobs of the same photo, preset, size, model and
    # writer versions (client_worker/asset_cache.py); 0 turns the cache off.
    asset_cache_ttl_s: int = Field(default=30 * 24 * 3600, ge=0)

    # --- webhooks --------------------------------------------------------------------------
    webhook_secret: SecretStr | None = None
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    webhook_attempts: int = Field(default=3, ge=1, le=10)
    webhook_retry_base_delay_s: float = Field(default=1.0, gt=0)
    webhook_redelivery_max_delay_s: float = Field(default=300.0, gt=0)
    # Webhook requests one worker has in flight at most (the outbox drains this many at a time).
    webhook_concurrency: int = Field(default=8, ge=1, le=256)
    status_ttl_s: int = Field(default=30 * 24 * 3600, ge=60)
    status_text_max_chars: int = Field(default=2000, ge=200)

    # --- observability ---------------------------------------------------------------------
    metrics_port: int = Field(default=9100, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator(
        "supabase_url", "supabase_service_role_key", "webhook_secret", "local_storage_dir",
        "local_storage_public_url", "result_backend_url", mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """`WEBHOOK_SECRET=` in a .env file means "no secret", not an empty HMAC key."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("rejected_list", "dead_letter_list")
    @classmethod
    def _list_name(cls, value: str, info: ValidationInfo) -> str:
        if value:
            return value
        keys = RedisKeys(info.data.get("key_prefix") or cls.default("key_prefix"))
        return keys.rejected() if info.field_name == "rejected_list" else keys.dead_letters()

    @field_validator("redis_url", "result_backend_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must start with redis://, rediss:// or unix:// (e.g. redis://localhost:6379/0)")
        return value

    @field_validator("priority_steps", mode="before")
    @classmethod
    def _step_list(cls, value: object) -> object:
        """`0,3,6,9` as well as the JSON list `[0, 3, 6, 9]` that kombu's option is written as."""
        if isinstance(value, str):
            text = value.strip()
            return json.loads(text) if text.startswith("[") else [item.strip() for item in text.split(",")]
        return value

    @field_validator("priority_steps")
    @classmethod
    def _steps(cls, value: list[int]) -> list[int]:
        if not value or value[0] != 0 or value != sorted(set(value)) or value[-1] > 9:
            raise ValueError(
                "must be increasing priorities from 0 to 9 that start with 0, as kombu's priority_steps "
                "(default 0,3,6,9)"
            )
        return value

    @field_validator("priority_separator", mode="before")
    @classmethod
    def _escaped_separator(cls, value: object) -> object:
        r"""The default separator is two control characters, so the environment writes it `\x06\x16`."""
        if isinstance(value, str):
            return _HEX_ESCAPE.sub(lambda match: chr(int(match.group(1), 16)), value)
        return value

    @field_validator("backend_url", "supabase_url", "local_storage_public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http(s) URL such as https://example.com")
        return value.rstrip("/")

    @field_validator("supabase_url")
    @classmethod
    def _no_user_info(cls, value: str | None) -> str | None:
        if value is not None and "@" in urlsplit(value).netloc:
            raise ValueError(
                "must not carry a user or password: Supabase authenticates with SUPABASE_SERVICE_ROLE_KEY, and "
                "user info in the URL would replace that key's bearer token and show in every public file URL"
            )
        return value

    @field_validator("triton_url")
    @classmethod
    def _grpc_target(cls, value: str) -> str:
        # dns:///host:port is gRPC's own syntax for "every address of this name" (a headless
        # Service on Kubernetes, docs/runbook.md, "Kubernetes"); any other scheme is a mistake.
        if "://" in value.removeprefix("dns:///"):
            raise ValueError("is a gRPC target host:port without a scheme (or dns:///host:port for every address of a name), e.g. localhost:8001")
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("triton_model_version", "triton_weights_version")
    @classmethod
    def _version(cls, value: str) -> str:
        if value and not value.isdigit():
            raise ValueError("is a model version number such as 1, or empty for the latest version")
        return value

    @field_validator("download_allowlist", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        """Accept a comma-separated `a, b` as well as a JSON list `["a", "b"]`."""
        if not isinstance(value, str):
            return value
        if value.strip().startswith("["):
            return json.loads(value)
        return [item.strip() for item in value.split(",") if item.strip()]

    @field_validator("download_allowlist")
    @classmethod
    def _allow_entries(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                if not HOST_NAME.fullmatch(entry):
                    raise ValueError(
                        f"{entry!r} is neither a network in CIDR form (10.20.0.0/16) nor a host name (cdn.internal)"
                    ) from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "Settings":
        if self.heartbeat_ttl_s <= 2 * self.heartbeat_interval_s:
            raise ValueError(
                "HEARTBEAT_TTL_S must be more than twice HEARTBEAT_INTERVAL_S, otherwise a busy "
                "worker can look dead and have its jobs taken over"
            )
        if self.retry_max_delay_s < self.retry_base_delay_s:
            raise ValueError("RETRY_MAX_DELAY_S must be at least RETRY_BASE_DELAY_S")
        return self

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of setting ``name``: the one home of each default the option objects share."""
        return cls.model_fields[name].get_default(call_default_factory=True)

    @classmethod
    def credential_urls(cls) -> list[str]:
        """The names of the settings typed `CredentialURL`."""
        return [name for name, field in cls.model_fields.items() if _is_credential_url(field.annotation, field.metadata)]

    def credentials(self) -> Iterator[str]:
        """Every credential these settings hold: the `SecretStr` values and the credentials of each
        `CredentialURL` (what `client_worker.redaction` removes from every text we show)."""
        urls = self.credential_urls()
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                yield value.get_secret_value()
            elif name in urls and value is not None:
                yield from url_credentials(value)

    def storage_problem(self) -> str | None:
        """Why the chosen storage backend cannot work, or None (only `run` needs storage)."""
        if self.storage_backend == "supabase":
            missing = [
                name
                for name, value in (
                    ("SUPABASE_URL", self.supabase_url),
                    ("SUPABASE_SERVICE_ROLE_KEY", self.supabase_service_role_key),
                )
                if not value
            ]
            if missing:
                return (
                    f"STORAGE_BACKEND=supabase needs {' and '.join(missing)}; set them, or use "
                    "STORAGE_BACKEND=local with LOCAL_STORAGE_DIR and LOCAL_STORAGE_PUBLIC_URL"
                )
        elif not self.local_storage_dir or not self.local_storage_public_url:
            return (
                "STORAGE_BACKEND=local needs LOCAL_STORAGE_DIR (where GLB files are written) and "
                "LOCAL_STORAGE_PUBLIC_URL (the URL prefix that serves that directory)"
            )
        return None



def load_settings(*, require_storage: bool = False, **overrides: object) -> Settings:
    """Read the environment, raising `ConfigError` with one line per invalid variable.

    `require_storage` adds the storage backend's own requirements (the worker needs them; the
    `generate`, `enqueue` and `healthcheck` commands do not).
    """
    try:
        settings = Settings(**overrides)
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            field = ".".join(str(part) for part in problem["loc"]).upper()
            message = problem["msg"].removeprefix("Value error, ")
            lines.append(f"{field}: {message}" if field else message)
        raise ConfigError("invalid worker configuration:\n  " + "\n  ".join(lines)) from None
    except SettingsError as error:
        raise ConfigError(f"invalid worker configuration: {error} ({error.__cause__})") from None
    problem = settings.storage_problem() if require_storage else None
    if problem is not None:
        raise ConfigError(f"invalid worker configuration:\n  {problem}")
    return settings
