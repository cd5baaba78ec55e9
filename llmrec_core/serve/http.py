"""`llmrec serve`: the recommender over HTTP (FastAPI + uvicorn), model and index loaded once.

  POST /recommend  {"user": "42"} or {"history": ["title", ...]}, optional "k" and "domain"
  POST /items      {"items": [{"item_id", "domain", "title"}, ...]}: the new-items checks, then logged durably,
                   embedded and searchable when the call returns, as `ingest-new-items` does; an optional
                   `Idempotency-Key` header makes a retry of an applied batch get the first answer again
  POST /reload     load the registry's champion (else the run's weights) and its index and swap them in whole
  GET  /healthz    model, index size, when it was loaded;  GET /metrics  Prometheus;  GET /docs  OpenAPI

Requests hold a reference to the recommender they started with, so a reload never drops or mixes one. Adding
items and swapping in a reloaded recommender happen under the new-item store's writer lock, and a reload takes
the items accepted while it loaded: every item answered with 200 is served after any reload or restart.
Bad requests get a 4xx with a one-line `detail` that echoes no body and names no filesystem path
(public_errors.py); an unexpected error is a 500 with no stack trace (the traceback goes to the server log).
Bodies over 1 MiB get 413 as soon as that many bytes have arrived, chunked or not (body_limit.py). POST /items
and POST /reload need `Authorization: Bearer <token>` when a token is set (auth.py).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..config import Params
from ..registry import serving_params
from ..data.contract import id_has_control_characters
from ..data.sources.common import bad_frame
from .auth import check_bind, state_change_guard
from .body_limit import MAX_BODY_BYTES, BodyLimit
from .item_store import writer
from .new_items import IdempotencyConflict, accept_batch, new_item_rows
from .public_errors import public_detail, public_validation_errors
from .recommend import Recommender, save_index

log = logging.getLogger("llmrec.serve")


def _not_blank(title: str) -> str:
    if not title.strip():
        raise ValueError("a title must hold more than whitespace")
    return title


def _no_control_characters(value: str) -> str:
    if id_has_control_characters(value):
        raise ValueError("an id must not hold control characters (a line break, NUL, ...)")
    return value


Title = Annotated[str, StringConstraints(min_length=1, max_length=1000), AfterValidator(_not_blank)]
Id = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_no_control_characters)]


class Strict(BaseModel):
    """A request body that refuses unknown fields and values of another type (`k: "5"` or `k: true`)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class RecommendRequest(Strict):
    """POST /recommend: a known user or a history of titles, k, and an optional domain."""

    user: Id | None = None
    history: list[Title] | None = Field(default=None, min_length=1, max_length=200)
    k: int = Field(default=10, ge=1, le=1000)
    domain: Id | None = None


class NewItem(Strict):
    """One item of POST /items: its id, domain and title."""

    item_id: Id
    domain: Id
    title: Title


class NewItemsRequest(Strict):
    """POST /items: up to 1,000 new items."""

    items: list[NewItem] = Field(min_length=1, max_length=1000)


class Service:
    """The live recommender and what serving it has counted; `reload` swaps in a new recommender whole."""

    def __init__(self, params: Params):
        self.params = params  # the live config: data, registry, services
        serving, self.version = serving_params(params)  # the registry's champion, or the run folders
        self.recommender = Recommender.load(serving)
        self.generation = 1
        self._reload_lock = threading.Lock()
        self.registry = CollectorRegistry()
        self.requests = Counter("llmrec_requests", "HTTP requests", ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("llmrec_request_seconds", "request latency", ["endpoint"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5))
        self.items = Gauge("llmrec_index_items", "items in the served index", registry=self.registry)
        self.reloads = Counter("llmrec_reloads", "weights and index swapped in", registry=self.registry)
        self.items.set(self.recommender.index.index.ntotal)

    def reload(self) -> dict:
        """Load the champion (or the run's current weights) and its index and swap them in; requests in flight keep
        the old ones."""
        with self._reload_lock:  # one reload at a time; requests keep using the old one until the swap
            serving, version = serving_params(self.params)
            fresh = Recommender.load(serving)
            with writer(self.params):  # no item is accepted between the catch-up and the swap
                fresh.catch_up()
                save_index(serving, fresh.index)  # a restart need not replay what it caught up
                self.recommender, self.version, self.generation = fresh, version, self.generation + 1
            self.items.set(fresh.index.index.ntotal)
            self.reloads.inc()
        return self.health()

    def add_items(self, items: list[dict], key: str | None = None) -> tuple[dict, int]:
        """Screen new items as `ingest-new-items` does, log, index and save those that pass: (body, status)."""
        source = f"POST /items {time.strftime('%Y-%m-%d %H:%M:%S')}"
        rows = new_item_rows(items, source)
        with writer(self.params):  # the recommender served now, not one a reload is replacing
            recommender = self.recommender
            result = accept_batch(recommender.params, recommender, rows, bad_frame(source, [], [], []), source, key)
            self.items.set(self.recommender.index.index.ntotal)
        return result.answer, result.status

    def health(self) -> dict:
        """What is served: the model, its index, how many items, and how many reloads so far."""
        r = self.recommender
        return {"status": "ok", "model_kind": r.tower.kind, "version": self.version.number if self.version else None,
                "model": r.index.meta.get("model"), "tuned": r.index.meta.get("tuned"),
                "items": int(r.index.index.ntotal), "index": r.index.meta.get("kind", "exact"), "domains": r.domains,
                "loaded_at": r.loaded_at,
                "generation": self.generation}


def create_app(params: Params, token: str | None = None) -> FastAPI:
    """The FastAPI app serving one run's recommender (loaded now), with its routes and Prometheus metrics.
    `token`: the bearer token POST /items and POST /reload require (None: they are open to loopback clients only)."""
    service = Service(params)
    app = FastAPI(title="llmrec", summary="LLM-Rec recommendations over HTTP", version="1")
    app.state.service = service
    changes_state = [Depends(state_change_guard(token))]
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)  # added first: inside the metrics, which count its 413s

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": public_validation_errors(exc.errors())}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": public_detail(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.middleware("http")
    async def metrics_and_no_traces(request: Request, call_next):
        endpoint = request.url.path
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:  # never a stack trace in a response
            log.exception("unexpected error on %s", endpoint)
            response = JSONResponse({"detail": "internal error"}, status_code=500)
        if endpoint != "/metrics":
            service.requests.labels(endpoint, str(response.status_code)).inc()
            service.latency.labels(endpoint).observe(time.perf_counter() - started)
        return response

    @app.post("/recommend")
    def recommend(body: RecommendRequest) -> dict:
        if (body.user is None) == (body.history is None):
            raise HTTPException(422, "give exactly one of `user` or `history`")
        recommender = service.recommender  # the one this request started with, whatever a reload does
        try:
            history, recs = recommender.recommend_records(body.user, body.history, body.k, body.domain)
        except KeyError as e:
            raise HTTPException(404, str(e.args[0])) from None
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        return {"history": history, "items": recs, "generation": service.generation}

    @app.post("/items", dependencies=changes_state)
    def add_items(body: NewItemsRequest,
                  idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None) -> dict:
        try:
            result, status = service.add_items([item.model_dump() for item in body.items], idempotency_key)
        except IdempotencyConflict as e:
            raise HTTPException(409, str(e)) from None
        return JSONResponse(result, status_code=status)

    @app.post("/reload", dependencies=changes_state)
    def reload() -> dict:
        try:
            return service.reload()
        except (FileNotFoundError, ValueError) as e:  # no index, or an index of other weights: keep serving
            raise HTTPException(409, f"kept the current model: {e}") from None

    @app.get("/healthz")
    def healthz() -> dict:
        return service.health()

    @app.get("/metrics")
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(service.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def serve(params: Params, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          threads: int = 1) -> None:
    """Run the app with uvicorn on host:port (127.0.0.1 unless told otherwise) until interrupted; a bind beyond
    loopback needs `token` (checked before the model loads). `threads`: torch's threads per operation. One by
    default: the batched search then holds one core while requests are parsed and answered on the others, and no
    operation waits for a thread another process holds the core of."""
    import torch
    import uvicorn

    check_bind(host, token)
    if threads < 1:
        raise ValueError(f"threads must be at least 1, not {threads}")
    torch.set_num_threads(threads)
    uvicorn.run(create_app(params, token), host=host, port=port, log_level="info")
