"""Content keys: a short hex digest of a JSON-able description of what a thing depends on.

Caches (latents, synthetic data, real-feature stats) and identities (job fingerprint,
sweep id) name themselves by such a key, so equal inputs find the same entry wherever
and whenever they are computed.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def content_key(obj: Any, length: int = 16) -> str:
    """First `length` hex digits of sha256 of `obj` as canonical JSON (keys sorted;
    values JSON cannot hold are written as `str(value)`)."""
    if not 1 <= length <= 64:
        raise ValueError(f"length={length} not allowed; use 1..64 hex digits")
    blob = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]
