"""Invite codes: easy to type, hard to guess, and stored only as a hash.

A code is 16 characters of Crockford base32 in groups of four (80 random bits): guessing one is
hopeless, and `!ws join` attempts are rate limited besides. Matching ignores case, spaces,
dashes and the letters people confuse with digits.
"""

from __future__ import annotations

import hashlib
import secrets

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CONFUSED = str.maketrans({"O": "0", "I": "1", "L": "1", "U": "V"})
CODE_LENGTH = 16


def new_code() -> str:
    raw = "".join(secrets.choice(_ALPHABET) for _ in range(CODE_LENGTH))
    return "-".join(raw[i : i + 4] for i in range(0, CODE_LENGTH, 4))


def normalize(code: str) -> str | None:
    """The code's canonical form, or None if it cannot be a code."""
    cleaned = "".join(code.upper().split()).replace("-", "").translate(_CONFUSED)
    if len(cleaned) != CODE_LENGTH or any(c not in _ALPHABET for c in cleaned):
        return None
    return cleaned


def code_hash(code: str) -> bytes:
    """What is stored: the SHA-256 of the canonical form. 80 random bits need no slow hash."""
    canonical = normalize(code)
    if canonical is None:
        raise ValueError("not an invite code")
    return hashlib.sha256(canonical.encode()).digest()


def hint(code: str) -> str:
    """The code's first group: what `!ws invites` shows to tell codes apart (16 of 80 bits)."""
    canonical = normalize(code)
    if canonical is None:
        raise ValueError("not an invite code")
    return canonical[:4]


def normalize_hint(text: str) -> str | None:
    """A code's first group as typed (`59X5`, `59x5-…`), or None."""
    cleaned = "".join(text.upper().split()).rstrip("…-.").translate(_CONFUSED)
    if len(cleaned) != 4 or any(c not in _ALPHABET for c in cleaned):
        return None
    return cleaned
