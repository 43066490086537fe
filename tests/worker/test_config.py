"""Settings: the guide's variable names, clear start-up errors, secrets never shown."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from client_worker.config import ConfigError, Settings, load_settings
from client_worker.download import DownloadLimits
from client_worker.redaction import loggable_settings

GUIDE_ENV = {
    "REDIS_URL": "redis://:hunter2@redis.internal:6380/2",
    "SUPABASE_URL": "https://abc.supabase.co/",
    "SUPABASE_SERVICE_ROLE_KEY": "service-role-secret-value",
    "SUPABASE_BUCKET_NAME": "models",
    "BACKEND_URL": "https://api.example.com",
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


def test_guide_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in GUIDE_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DOWNLOAD_ALLOWLIST", "10.0.0.0/8, cdn.internal")
    settings = load_settings()
    assert settings.supabase_url == "https://abc.supabase.co"
    assert settings.supabase_bucket_name == "models"
    assert settings.backend_url == "https://api.example.com"
    limits = DownloadLimits.from_settings(settings)
    assert [str(net) for net in limits.allowed_networks] == ["10.0.0.0/8"]
    assert limits.allowed_hosts == {"cdn.internal"}
    assert settings.supabase_service_role_key.get_secret_value() == "service-role-secret-value"


def test_secrets_never_appear_in_summaries(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in GUIDE_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("WEBHOOK_SECRET", "webhook-secret-value")
    settings = load_settings()
    for text in (repr(settings), str(settings), str(loggable_settings(settings))):
        for secret in ("service-role-secret-value", "webhook-secret-value", "hunter2"):
            assert secret not in text
    assert loggable_settings(settings)["redis_url"] == "redis://***@redis.internal:6380/2"


def test_every_problem_is_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "localhost:6379")
    monkeypatch.setenv("TRITON_URL", "http://triton:8001")
    monkeypatch.setenv("CONCURRENCY", "0")
    monkeypatch.setenv("DEFAULT_PRESET", "ultra")
    monkeypatch.setenv("DOWNLOAD_ALLOWLIST", "http://cdn.internal/")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "REDIS_URL: must start with redis://" in message
    assert "TRITON_URL: is a gRPC target host:port without a scheme" in message
    assert "CONCURRENCY:" in message
    assert "DEFAULT_PRESET:" in message
    assert "DOWNLOAD_ALLOWLIST: 'http://cdn.internal/' is neither a network" in message


def test_triton_url_may_be_every_address_of_a_name() -> None:
    """dns:///NAME:PORT (a headless Service) is gRPC's target syntax; other schemes are mistakes."""
    assert load_settings(triton_url="dns:///triton.ns.svc.cluster.local:8001").triton_url.startswith("dns:///")
    with pytest.raises(ConfigError, match="TRITON_URL: is a gRPC target"):
        load_settings(triton_url="dns:///http://triton:8001")


def test_supabase_backend_requires_its_credentials() -> None:
    with pytest.raises(ConfigError, match="STORAGE_BACKEND=supabase needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY"):
        load_settings(require_storage=True)
    with pytest.raises(ConfigError, match="LOCAL_STORAGE_DIR"):
        load_settings(require_storage=True, storage_backend="local")
    assert load_settings().storage_backend == "supabase"  # generate/enqueue need no storage


def test_heartbeat_must_outlive_its_interval() -> None:
    with pytest.raises(ConfigError, match="HEARTBEAT_TTL_S must be more than twice"):
        load_settings(heartbeat_interval_s=10, heartbeat_ttl_s=15)


def test_env_example_documents_every_variable_and_loads() -> None:
    example = Path(__file__).resolve().parents[2] / ".env.example"
    documented = set(re.findall(r"^#? ?([A-Z_]+)=", example.read_text(), re.MULTILINE))
    assert documented == {name.upper() for name in Settings.model_fields}
    settings = Settings(_env_file=example)
    assert settings.webhook_secret is None  # `WEBHOOK_SECRET=` means unset
    assert settings.supabase_bucket_name == "3d-models"


def test_priority_options_are_read_as_kombu_writes_them(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (load_settings().priority_steps, load_settings().priority_separator) == ([0, 3, 6, 9], "\x06\x16")
    monkeypatch.setenv("PRIORITY_STEPS", "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]")
    monkeypatch.setenv("PRIORITY_SEPARATOR", ":")
    assert (load_settings().priority_steps, load_settings().priority_separator) == (list(range(10)), ":")
    monkeypatch.setenv("PRIORITY_STEPS", "0, 5")
    monkeypatch.setenv("PRIORITY_SEPARATOR", r"\x06\x16")
    assert (load_settings().priority_steps, load_settings().priority_separator) == ([0, 5], "\x06\x16")
    for steps in ("3,6,9", "0,6,3", "0,12"):
        monkeypatch.setenv("PRIORITY_STEPS", steps)
        with pytest.raises(ConfigError, match="PRIORITY_STEPS: must be increasing priorities from 0 to 9"):
            load_settings()


def test_the_result_backend_is_a_redis_url() -> None:
    assert load_settings().result_backend_url is None
    assert load_settings(result_backend_url="").result_backend_url is None
    with pytest.raises(ConfigError, match="RESULT_BACKEND_URL: must start with redis://"):
        load_settings(result_backend_url="rpc://")


def test_the_quality_check_is_review_unless_quality_check_says_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().quality_check == "review"
    monkeypatch.setenv("QUALITY_CHECK", "strict")
    assert load_settings().quality_check == "strict"
    monkeypatch.setenv("QUALITY_CHECK", "lax")
    with pytest.raises(ConfigError, match="QUALITY_CHECK:"):
        load_settings()
