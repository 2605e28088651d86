"""A run's record carries a digest of its own values, checked by every reader.

result.json is the verdict's source: a flipped bit in a digit (0.9111 -> 0.9011, a rotting disk, a
bad copy) or a hand's edit left well-formed JSON that every reader took as measured, and the report
ranked on it. The writer adds `content_sha256`, the SHA-256 of the record's values in a canonical
form (sorted keys, no spaces: what JSON parses back, so a file re-indented by a tool still checks);
`src.record.io.read_json_object` checks it and hands readers the record without it. A file without
one (written before it, or by hand) is read as it is, unless it holds the key's name with one character
changed: that is the digest's own name damaged (a flipped bit), not an older file.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

DIGEST_KEY = "content_sha256"


def _digest(data: dict[str, Any]) -> str:
    text = json.dumps({k: v for k, v in data.items() if k != DIGEST_KEY}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def signed(data: dict[str, Any]) -> dict[str, Any]:
    """`data` (as JSON will read it back: non-finite numbers already null) with its digest, last."""
    return {**{k: v for k, v in data.items() if k != DIGEST_KEY}, DIGEST_KEY: _digest(data)}


def verified(data: dict[str, Any]) -> dict[str, Any]:
    """`data` without its digest, if it has one and it matches; ValueError saying so if not."""
    if DIGEST_KEY not in data:
        # A bit flipped in the key's own name would otherwise read as a file from before digests, and
        # its values go unchecked: a name one character off the key's is that damage, not a user's key.
        damaged = next((k for k in data if len(k) == len(DIGEST_KEY) and sum(a != b for a, b in zip(k, DIGEST_KEY)) == 1),
                       None)
        if damaged is not None:
            raise ValueError(f"its key {damaged!r} is {DIGEST_KEY!r} damaged since it was written (its values cannot "
                             f"be checked; to accept the file, delete that key)")
        return data
    if data[DIGEST_KEY] != _digest(data):
        raise ValueError(f"its values do not match the {DIGEST_KEY} written with them (damaged or edited since it "
                         f"was written; to accept an edit, delete that key)")
    return {k: v for k, v in data.items() if k != DIGEST_KEY}
