"""Credentials from the environment, and the API key shown masked: no network code, so the magics can load
(and say which backend they will use) without importing an HTTP stack."""

from __future__ import annotations

import os
from typing import Optional

DEFAULT_BASE_URL = "https://api.cloud.scenario.com/v1"

_KEY_VARS = ("SCENARIO_API_KEY", "SCENARIO_SDK_API_KEY")
_SECRET_VARS = ("SCENARIO_API_SECRET", "SCENARIO_SDK_API_SECRET")
_URL_VARS = ("SCENARIO_API_URL", "SCENARIO_BASE_URL")


def _first_env(names: tuple[str, ...]) -> Optional[str]:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def mask(key: Optional[str]) -> str:
    """Show enough of an API key to recognise it, never enough to use it."""
    if not key:
        return "(not set)"
    return f"{key[:4]}…{key[-2:]}" if len(key) >= 12 else "****"


def credentials_from_env() -> tuple[Optional[str], Optional[str], str]:
    """Key, secret and base URL from the environment (ours first, then the official SDK's names)."""
    return _first_env(_KEY_VARS), _first_env(_SECRET_VARS), _first_env(_URL_VARS) or DEFAULT_BASE_URL
