"""The HTTP surface: FastAPI over the Service, OpenAPI built from the record models.

Bodies are read and parsed here (orjson, with a size cap) and validated by the
same code as `check`, so an invalid record gets the reason `check` would give,
with its index in the request and its field. Every error is an RFC 9457
problem document; no response ever carries a stack trace.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import itertools
import logging
import re
import time
import uuid
from typing import Any, Literal, Optional, Union

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from .. import __version__
from ..conditions import describe
from ..model import BuyerEvent, Finding, Message, Verdict, message_json_schema
from ..timeline import in_force_on, local_date, timeline_rows
from .metrics import Metrics
from .service import RequestProblem, Service
from .store import LATEST, StoreError
from .tokens import TokenEntry, verify

log = logging.getLogger("msgpolicy.serve")

PROBLEM = "application/problem+json"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
LOCAL_CLIENTS = {"testclient"}  # Starlette's test client
# Request ids: a random prefix per process and a counter (uuid4 reads the OS's random source each time).
_ID_PREFIX = uuid.uuid4().hex[:12] + "-"
_ids = itertools.count(1)


# ---- documented shapes (OpenAPI) -------------------------------------------------


class ProblemError(BaseModel):
    index: Optional[int] = Field(None, description="position of the record in the request's list")
    field: Optional[str] = Field(None, description="the record's field, dotted for nested ones")
    message_id: Optional[str] = None
    reason: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: Optional[str] = None
    request_id: Optional[str] = None
    errors: list[ProblemError] = Field(default_factory=list)


class CheckRequest(BaseModel):
    """`record` (one) or `records` (a list, oldest first or not: they are judged in time order)."""

    record: Optional[Union[Message, BuyerEvent]] = None
    records: Optional[list[Union[Message, BuyerEvent]]] = Field(
        None, description="messages and buyer events; earlier ones are history for later ones")
    on: Optional[str] = Field(None, description="judge as if sent then: a date (local noon) or an RFC 3339 instant")
    alt: list[str] = Field(default_factory=list, description="recorded alternative readings to select")
    commit: bool = Field(False, description="also record the records as sent (durable before the answer)")


class EventsRequest(BaseModel):
    events: list[Union[BuyerEvent, Message]] = Field(
        description="buyer opt-out/opt-in events and buyer messages (initiated_by: buyer)")


class FindingOut(Finding):
    """A finding as `check --format json` prints it: evidence only when there is some."""

    evidence: Optional[dict[str, str]] = None


class VerdictOut(Verdict):
    """A verdict as `check --format json` prints it (the instant as its ISO text)."""

    evaluated_at: str
    findings: list[FindingOut]


class CheckResponse(BaseModel):
    request_id: str
    committed: bool
    verdicts: list[VerdictOut]


class EventsResponse(BaseModel):
    request_id: str
    recorded: int


class DecisionOut(BaseModel):
    id: int
    request_id: str
    index: int
    decided_at: str
    message_id: str
    order_id: str
    buyer_id: str
    outcome: str
    committed: bool
    on: Optional[str]
    alt: list[str]
    engine_version: str
    policy_hashes: dict[str, str]
    record: dict[str, Any]
    history: list[dict[str, Any]]
    verdict: VerdictOut


class DecisionsResponse(BaseModel):
    decisions: list[DecisionOut]
    next_after: Optional[int] = Field(None, description="pass as `after` for the next page")


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready"]
    store: str
    schema_version: int


def _problem_responses(*codes: int) -> dict:
    text = {401: "no valid bearer token", 403: "not from localhost and no token file configured",
            404: "not found", 409: "already committed", 413: "request too large", 422: "invalid request",
            503: "store unavailable or time limit exceeded"}
    return {c: {"description": text[c], "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
            for c in codes}


AUTH = (401, 403)


def _json(data, status: int = 200, headers: Optional[dict] = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json", headers=headers)


def _problem(status: int, title: str, detail: str, request: Optional[Request] = None, errors=None,
             type_: str = "about:blank", headers: Optional[dict] = None, path: Optional[str] = None,
             request_id: Optional[str] = None) -> Response:
    body = {"type": type_, "title": title, "status": status, "detail": detail}
    if request is not None:
        path = request.url.path
        request_id = getattr(request.state, "request_id", None)
    if path is not None:
        body["instance"] = path
    if request_id:
        body["request_id"] = request_id
    body["errors"] = errors or []
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM, headers=headers)


def _is_local(host: Optional[str]) -> bool:
    if host is None:
        return False
    if host in LOCAL_CLIENTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(service: Service, tokens: Optional[list[TokenEntry]] = None) -> FastAPI:
    """The ASGI application. `tokens` None: no authentication, and only loopback clients are served."""
    metrics = Metrics()
    limits = service.limits

    app = FastAPI(title="msgpolicy", version=__version__,
                  description="Check seller-to-buyer messages before they are sent, with the history kept "
                              "in a database. Every error is an RFC 9457 problem document.",
                  docs_url="/docs", redoc_url=None)
    app.state.service = service
    app.state.metrics = metrics

    # -- middleware: request id, limits, auth, metrics ---------------------------------

    class Frame:
        """Request id, auth, the body size limit and metrics around every request (plain ASGI:
        Starlette's BaseHTTPMiddleware costs about a millisecond a request)."""

        def __init__(self, inner):
            self.inner = inner

        async def __call__(self, scope, receive, send):
            if scope["type"] != "http":
                return await self.inner(scope, receive, send)
            start = time.perf_counter()
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
            rid = headers.get("x-request-id")
            rid = rid if rid and _REQUEST_ID.match(rid) else f"{_ID_PREFIX}{next(_ids):x}"
            scope.setdefault("state", {})["request_id"] = rid
            path = scope.get("path", "")
            state = {"status": 500, "started": False}

            async def send_framed(message):
                if message["type"] == "http.response.start":
                    state["status"], state["started"] = message["status"], True
                    message = dict(message, headers=[*message.get("headers", ()), (b"x-request-id", rid.encode())])
                await send(message)

            refusal = None
            if path.startswith("/v1/") or path == "/metrics":
                if tokens is None:
                    client = scope.get("client")
                    if not _is_local(client[0] if client else None):
                        refusal = _problem(403, "Forbidden", "this server has no token file and serves localhost only",
                                           path=path, request_id=rid)
                else:
                    scheme, _, token = headers.get("authorization", "").partition(" ")
                    if scheme.lower() != "bearer" or verify(tokens, token.strip()) is None:
                        refusal = _problem(401, "Unauthorized", "a valid bearer token is required", path=path,
                                           request_id=rid, headers={"WWW-Authenticate": 'Bearer realm="msgpolicy"'})
            length = headers.get("content-length")
            if refusal is None and length is not None and length.isdigit() and int(length) > limits.max_body_bytes:
                refusal = _problem(413, "Request too large",
                                   f"the body is {length} bytes; at most {limits.max_body_bytes}", path=path, request_id=rid)
            try:
                if refusal is not None:
                    await refusal(scope, receive, send_framed)
                else:
                    await self.inner(scope, receive, send_framed)
            except Exception:  # noqa: BLE001 - a traceback goes to the log, never to the client
                log.exception("unhandled error on %s %s", scope.get("method"), path)
                if not state["started"]:
                    await _problem(500, "Internal error", "the server failed; the request id is in the log",
                                   path=path, request_id=rid)(scope, receive, send_framed)
            finally:
                route = scope.get("route")
                metrics.observe_request(scope.get("method", ""), getattr(route, "path", "unmatched"), state["status"],
                                        time.perf_counter() - start)

    # -- errors ------------------------------------------------------------------------

    @app.exception_handler(RequestProblem)
    async def on_problem(request: Request, exc: RequestProblem):
        return _problem(exc.status, exc.title, exc.detail, request, exc.errors, exc.type)

    @app.exception_handler(StoreError)
    async def on_store(request: Request, exc: StoreError):
        metrics.store_error()
        log.error("store error: %s", exc)
        return _problem(503, "Store unavailable", "the history database did not answer; try again", request)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError):
        errors = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ()) if p not in ("query", "body", "path", "header")]
            errors.append({"index": None, "field": ".".join(loc) or None, "message_id": None,
                           "reason": str(err.get("msg", "invalid"))})
        first = errors[0] if errors else {"field": None, "reason": "invalid request"}
        return _problem(422, "Invalid request", f"{first['field'] or 'request'}: {first['reason']}", request, errors)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException):
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "Error")
        return _problem(exc.status_code, title, str(exc.detail), request, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def on_error(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _problem(500, "Internal error", "the server failed; the request id is in the log", request)

    async def read_json(request: Request) -> dict:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise RequestProblem(413, "Request too large", f"the body exceeds {limits.max_body_bytes} bytes")
            chunks.append(chunk)
        try:
            data = orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError as exc:
            raise RequestProblem(422, "Malformed JSON", f"the body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise RequestProblem(422, "Invalid request", f"the body must be a JSON object, not {type(data).__name__}")
        return data

    # -- endpoints ---------------------------------------------------------------------

    body_check = {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/CheckRequest"}}}}}
    body_events = {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/EventsRequest"}}}}}

    @app.post("/v1/check", response_model=CheckResponse, openapi_extra=body_check,
              responses=_problem_responses(*AUTH, 409, 413, 422, 503),
              summary="Judge one record or a list against the stored history; optionally commit them")
    async def check(request: Request):
        data = await read_json(request)
        unknown = sorted(set(data) - set(CheckRequest.model_fields))
        if unknown:
            raise RequestProblem(422, "Invalid request", f"unknown member(s): {', '.join(unknown)}",
                                 [{"index": None, "field": k, "message_id": None, "reason": "unknown member"}
                                  for k in unknown])
        if ("record" in data) == ("records" in data):
            raise RequestProblem(422, "Invalid request", "give exactly one of 'record' and 'records'",
                                 [{"index": None, "field": "records", "message_id": None,
                                   "reason": "give exactly one of 'record' and 'records'"}])
        raw = [data["record"]] if "record" in data else data["records"]
        if not isinstance(raw, list):
            raise RequestProblem(422, "Invalid request", "'records' must be a list",
                                 [{"index": None, "field": "records", "message_id": None, "reason": "not a list"}])
        on, alt, commit = data.get("on"), data.get("alt", []), data.get("commit", False)
        for name, value, ok in (("on", on, on is None or isinstance(on, str)),
                                ("alt", alt, isinstance(alt, list) and all(isinstance(a, str) for a in alt)),
                                ("commit", commit, isinstance(commit, bool))):
            if not ok:
                raise RequestProblem(422, "Invalid request", f"'{name}' has the wrong type",
                                     [{"index": None, "field": name, "message_id": None, "reason": "wrong type"}])
        if commit:  # waits for the disk: off the event loop
            outcome = await run_in_threadpool(service.check, raw, on, alt, commit, request.state.request_id)
        else:
            # CPU-bound under the engine's lock either way: judged on the loop, sparing two thread hand-offs.
            outcome = service.check(raw, on, alt, commit, request.state.request_id)
        metrics.observe_verdicts(outcome.verdicts, outcome.committed)
        return _json({"request_id": outcome.request_id, "committed": outcome.committed,
                      "verdicts": [d.verdict for d in outcome.decisions]})

    @app.post("/v1/events", response_model=EventsResponse, openapi_extra=body_events,
              responses=_problem_responses(*AUTH, 409, 413, 422, 503),
              summary="Record buyer opt-out/opt-in events and buyer messages into the history")
    async def events(request: Request):
        data = await read_json(request)
        raw = data.get("events")
        if not isinstance(raw, list) or set(data) != {"events"}:
            raise RequestProblem(422, "Invalid request", "the body must be {\"events\": [...]}",
                                 [{"index": None, "field": "events", "message_id": None, "reason": "a list is required"}])
        rid, n = await run_in_threadpool(service.add_events, raw, request.state.request_id)
        return _json({"request_id": rid, "recorded": n})

    @app.get("/v1/timeline", responses=_problem_responses(*AUTH),
             summary="Policy versions, their intervals [from, to) and the recorded alternatives")
    def timeline() -> dict[str, Any]:
        policies = service.policies
        alternatives = [{"name": a.name, "policy": f.id, "title": a.title, "confidence": a.confidence,
                         "sources": a.sources} for f in policies.families.values() for a in f.file.alternatives]
        return _json({"versions": timeline_rows(policies), "alternatives": alternatives,
                      "selected_alternatives": list(policies.alternatives)})

    @app.get("/v1/rules", responses=_problem_responses(*AUTH, 422),
             summary="The rules in force on a date in a marketplace, conditions in words, sources")
    def rules(on: Optional[str] = Query(None, description="a date or an RFC 3339 instant (default: today)"),
              marketplace: str = Query("US")) -> dict[str, Any]:
        policies = service.policies
        if marketplace not in policies.marketplaces:
            reason = f"unknown marketplace {marketplace!r} (known: {', '.join(sorted(policies.marketplaces))})"
            raise RequestProblem(422, "Invalid request", reason,
                                 [{"index": None, "field": "marketplace", "message_id": None, "reason": reason}])
        when = service.parse_on(on) if on is not None else dt.date.today()
        day = when if not isinstance(when, dt.datetime) else local_date(policies, when, marketplace)
        data = [{
            "policy": v.family, "version": v.id, "title": v.version.title,
            "effective_from": v.effective_from.isoformat(),
            "effective_to": v.effective_to.isoformat() if v.effective_to else None,
            "rules": [{"rule": r.id, "title": r.rule.title, "outcome": r.rule.outcome.value,
                       "condition": describe(r.condition), "reason": r.rule.reason,
                       "confidence": r.rule.confidence, "sources": r.rule.sources} for r in v.enabled_rules],
        } for v in in_force_on(policies, day, marketplace)]
        return _json({"date": day.isoformat(), "marketplace": marketplace, "versions": data})

    @app.get("/v1/schema", responses=_problem_responses(*AUTH), summary="JSON Schema of the message record")
    def schema() -> dict[str, Any]:
        return _json(message_json_schema())

    @app.get("/v1/decisions", response_model=DecisionsResponse, responses=_problem_responses(*AUTH, 422, 503),
             summary="The decision log: every verdict with its record, history, engine and policy hashes")
    def decisions(order_id: Optional[str] = Query(None),
                  since: Optional[dt.datetime] = Query(None, description="decided at or after this instant"),
                  after: int = Query(0, ge=0, le=2**63 - 1, description="decisions with a larger id (paging)"),
                  limit: int = Query(100, ge=1, le=1000)):
        if since is not None and since.tzinfo is None:
            raise RequestProblem(422, "Invalid request", "since: give a UTC offset",
                                 [{"index": None, "field": "since", "message_id": None, "reason": "no UTC offset"}])
        since_text = since.astimezone(dt.timezone.utc).isoformat(timespec="microseconds") if since else None
        service.flush()  # the decisions of checks just answered are still being written
        with service.store.transaction() as tx:
            rows = tx.decisions(order_id, since_text, limit, after)
        items = [{"id": i, **d.as_json()} for i, d in rows]
        return _json({"decisions": items, "next_after": rows[-1][0] if len(rows) == limit else None})

    @app.get("/healthz", response_model=Health, summary="The process is up")
    def healthz():
        return _json({"status": "ok"})

    @app.get("/readyz", response_model=Ready, responses=_problem_responses(503),
             summary="The store answers and its schema is current")
    def readyz():
        try:
            version = service.store.schema_version()
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            metrics.store_error()
            log.error("readiness: %s", exc)
            return _problem(503, "Not ready", "the history database does not answer")
        if version < LATEST:
            return _problem(503, "Not ready", f"the database schema is at version {version}, this server needs {LATEST}")
        return _json({"status": "ready", "store": service.store.dialect, "schema_version": version})

    @app.get("/metrics", responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                                          "description": "Prometheus text format"}, **_problem_responses(*AUTH)},
             summary="Prometheus metrics: requests, latency, outcomes by rule, store errors")
    def prometheus():
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    def openapi():
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = doc.setdefault("components", {}).setdefault("schemas", {})
        for model in (CheckRequest, EventsRequest, Problem):
            schema_ = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in schema_.pop("$defs", {}).items():
                components.setdefault(name, sub)
            components[model.__name__] = schema_
        if tokens is not None:
            components_root = doc["components"]
            components_root["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            for path, ops in doc["paths"].items():
                if path.startswith("/v1/") or path == "/metrics":
                    for op in ops.values():
                        op["security"] = [{"bearer": []}]
        app.openapi_schema = doc
        return doc

    app.openapi = openapi
    app.add_middleware(Frame)
    return app
