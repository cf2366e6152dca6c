"""`msgpolicy serve`: check messages before they are sent, over HTTP, with the history in a database."""
from __future__ import annotations

import ipaddress
import sys
from pathlib import Path
from typing import Optional, Sequence

from .service import Limits, RequestProblem, Service
from .store import Store, StoreError, open_store


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build(store_url: Optional[str], policies_dir: Optional[Path] = None, alternatives: Sequence[str] = (),
          tokens_file: Optional[Path] = None, limits: Optional[Limits] = None, policies=None, warm: bool = False):
    """(app, service): policies loaded (unless given), store opened and migrated, tokens read;
    `warm`: rulesets compiled and the classifier loaded before the first request."""
    from ..policyfile import load_policies
    from .app import create_app
    from .tokens import load_tokens

    if policies is None:
        policies = load_policies(policies_dir, alternatives=alternatives)
    store = open_store(store_url)
    store.migrate()
    tokens = load_tokens(tokens_file) if tokens_file is not None else None
    service = Service(policies, store, limits or Limits())
    if warm:
        service.warm()
    return create_app(service, tokens), service


def run(host: str, port: int, store_url: Optional[str], tokens_file: Optional[Path], policies_dir: Optional[Path],
        alternatives: Sequence[str], log_level: str = "info") -> None:
    import uvicorn

    if tokens_file is None and not is_loopback(host):
        raise SystemExit(f"serve: refusing to listen on {host} without --tokens: "
                         "with no token file the server serves localhost only")
    app, service = build(store_url, policies_dir, alternatives, tokens_file, warm=True)
    where = service.store.url if service.store.dialect == "sqlite" else _redact(service.store.url)
    print(f"msgpolicy serve: store {service.store.dialect} {where}", file=sys.stderr)
    if tokens_file is None:
        print("msgpolicy serve: no token file: no authentication, localhost clients only", file=sys.stderr)
    else:
        print(f"msgpolicy serve: bearer tokens from {tokens_file}", file=sys.stderr)
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
    finally:
        service.close()
        service.store.close()


def _redact(url: str) -> str:
    """A PostgreSQL URL without its password."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


__all__ = ["build", "run", "Service", "Limits", "RequestProblem", "Store", "StoreError", "open_store"]
