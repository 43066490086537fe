"""Fixtures shared by every test folder: real servers from tests/support/, one instance per session."""

pytest_plugins = [
    "tests.support.triton",
    "tests.support.redis_server",
    "tests.support.webhook_receiver",
    "tests.support.supabase_server",
    "tests.support.gltf_validator",
    "tests.support.node_celery",
    "tests.support.model_viewer",
    "tests.support.image_server",
]
