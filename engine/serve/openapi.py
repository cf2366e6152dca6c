"""Print the server's OpenAPI document (published with the docs): `python -m engine.serve.openapi`."""
from __future__ import annotations

import sys

import orjson


def document() -> dict:
    from ..policyfile import load_policies
    from .app import create_app
    from .service import Service

    return create_app(Service(load_policies(), store=None)).openapi()  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.stdout.write(orjson.dumps(document(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n")
