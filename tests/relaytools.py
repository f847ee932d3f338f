"""Helpers for the relay tests."""

from __future__ import annotations

import urllib.error
import urllib.request


def http_status(url: str, timeout: float = 20.0) -> int:
    """The status code of a GET, as soon as the response headers arrive."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
