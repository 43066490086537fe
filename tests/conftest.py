"""Fixtures shared by every test folder: real servers from tests/support/ (one instance per session)."""

pytest_plugins = ["tests.support.triton"]
