"""Bearer tokens: a file of salted hashes, one per line (`name salt-hex sha256-hex`).

Tokens are 32 random bytes, so one salted SHA-256 is enough (there is nothing
to brute-force); the file never holds a token itself. Every stored hash is
compared, in constant time, whatever matches first.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

_NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
PREFIX = "mp_"


class TokenFileError(ValueError):
    pass


@dataclass(frozen=True)
class TokenEntry:
    name: str
    salt: bytes
    digest: bytes


def _digest(salt: bytes, token: str) -> bytes:
    return hashlib.sha256(salt + token.encode("utf-8")).digest()


def load_tokens(path: Path) -> list[TokenEntry]:
    entries = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        try:
            name, salt, digest = parts
            entry = TokenEntry(name, bytes.fromhex(salt), bytes.fromhex(digest))
        except ValueError:
            raise TokenFileError(f"{path} line {number}: expected 'name salt-hex sha256-hex'") from None
        if len(entry.digest) != 32 or not entry.salt:
            raise TokenFileError(f"{path} line {number}: the hash must be 32 bytes and the salt not empty")
        entries.append(entry)
    return entries


def add_token(path: Path, name: str) -> str:
    """Append a new token's salted hash to the file (created 0600) and return the token, shown once."""
    if not _NAME.match(name):
        raise TokenFileError(f"token name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-'")
    path = Path(path)
    if path.exists():
        if any(e.name == name for e in load_tokens(path)):
            raise TokenFileError(f"{path}: a token named {name!r} already exists")
    token = PREFIX + secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    line = f"{name} {salt.hex()} {_digest(salt, token).hex()}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(line)
    return token


def verify(entries: list[TokenEntry], token: Optional[str]) -> Optional[str]:
    """The name of the token's entry, or None."""
    if not token:
        return None
    found = None
    for entry in entries:
        if hmac.compare_digest(_digest(entry.salt, token), entry.digest) and found is None:
            found = entry.name
    return found
