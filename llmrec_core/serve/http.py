"""`llmrec serve`: the recommender over HTTP (FastAPI + uvicorn), model and index loaded once.

  POST /recommend  {"user": "42"} or {"history": ["title", ...]}, optional "k" and "domain"
  POST /items      {"items": [{"item_id", "domain", "title"}, ...]}: the new-items checks, then logged durably,
                   embedded and searchable when the call returns, as `ingest-new-items` does; an optional
                   `Idempotency-Key` header makes a retry of an applied batch get the first answer again
  POST /reload     load the run's current weights and index (after a retrain) and swap them in whole
  GET  /healthz    model, index size, when it was loaded;  GET /metrics  Prometheus;  GET /docs  OpenAPI

Requests hold a reference to the recommender they started with, so a reload never drops or mixes one. Adding
items and swapping in a reloaded recommender happen under the new-item store's writer lock, and a reload takes
the items accepted while it loaded: every item answered with 200 is served after any reload or restart.
Bad requests get a 4xx with a one-line `detail`; an unexpected error is a 500 with no stack trace (the
traceback goes to the server log).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Annotated

from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ..config import Params
from ..data.sources.common import bad_frame
from .item_store import writer
from .new_items import IdempotencyConflict, accept_batch, new_item_rows
from .recommend import Recommender, save_index

log = logging.getLogger("llmrec.serve")
MAX_BODY_BYTES = 1 << 20
Title = Annotated[str, StringConstraints(min_length=1, max_length=1000)]
Id = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class Strict(BaseModel):
    """A request body that refuses unknown fields."""

    model_config = ConfigDict(extra="forbid")


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
        self.params = params
        self.recommender = Recommender.load(params)
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
        """Load the run's current weights and index and swap them in; requests in flight keep the old ones."""
        with self._reload_lock:  # one reload at a time; requests keep using the old one until the swap
            fresh = Recommender.load(self.params)
            with writer(self.params):  # no item is accepted between the catch-up and the swap
                fresh.catch_up()
                save_index(self.params, fresh.index)  # a restart need not replay what it caught up
                self.recommender, self.generation = fresh, self.generation + 1
            self.items.set(fresh.index.index.ntotal)
            self.reloads.inc()
        return self.health()

    def add_items(self, items: list[dict], key: str | None = None) -> tuple[dict, int]:
        """Screen new items as `ingest-new-items` does, log, index and save those that pass: (body, status)."""
        source = f"POST /items {time.strftime('%Y-%m-%d %H:%M:%S')}"
        rows = new_item_rows(items, source)
        with writer(self.params):  # the recommender served now, not one a reload is replacing
            result = accept_batch(self.params, self.recommender, rows, bad_frame(source, [], [], []), source, key)
            self.items.set(self.recommender.index.index.ntotal)
        return result.answer, result.status

    def health(self) -> dict:
        """What is served: the model, its index, how many items, and how many reloads so far."""
        r = self.recommender
        return {"status": "ok", "model_kind": r.tower.kind, "model": r.index.meta.get("model"),
                "tuned": r.index.meta.get("tuned"),
                "items": int(r.index.index.ntotal), "index": r.index.meta.get("kind", "exact"), "domains": r.domains,
                "loaded_at": r.loaded_at,
                "generation": self.generation}


def create_app(params: Params) -> FastAPI:
    """The FastAPI app serving one run's recommender (loaded now), with its routes and Prometheus metrics."""
    service = Service(params)
    app = FastAPI(title="llmrec", summary="LLM-Rec recommendations over HTTP", version="1")
    app.state.service = service

    @app.middleware("http")
    async def limits_and_metrics(request: Request, call_next):
        endpoint = request.url.path
        started = time.perf_counter()
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > MAX_BODY_BYTES):
            response = JSONResponse({"detail": f"request body over {MAX_BODY_BYTES:,} bytes"}, status_code=413)
        else:
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
            history, recs = recommender.recommend(body.user, body.history, body.k, body.domain)
        except KeyError as e:
            raise HTTPException(404, str(e.args[0])) from None
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        return {"history": history.to_dict("records"), "items": recs.to_dict("records"),
                "generation": service.generation}

    @app.post("/items")
    def add_items(body: NewItemsRequest,
                  idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None) -> dict:
        try:
            result, status = service.add_items([item.model_dump() for item in body.items], idempotency_key)
        except IdempotencyConflict as e:
            raise HTTPException(409, str(e)) from None
        return JSONResponse(result, status_code=status)

    @app.post("/reload")
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


def serve(params: Params, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the app with uvicorn on host:port (127.0.0.1 unless told otherwise) until interrupted."""
    import uvicorn

    uvicorn.run(create_app(params), host=host, port=port, log_level="info")
