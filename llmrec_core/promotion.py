"""Champion and challenger: register what the pipeline trained, gate it against the serving champion on the same
validation rows (both scored as they serve), and switch versions by hand (promote, rollback) with a running
`llmrec serve` told to reload."""
from __future__ import annotations

import os

from .config import Params
from .data.layout import DataLayout
from .data.settings import load_setting
from .evaluate.ranking import select_rows
from .registry import Decision, ModelRegistry, Version
from .serve.recommend import Recommender
from .serve.served_metrics import served_metrics


def validation_scorer(params: Params):
    """scores(serving params) -> the served metrics on `params`' validation split: the candidate's rows, the same
    seeded sample for every version scored."""
    data = load_setting(DataLayout(params.data_root).prepared, params.train.setting, params.train.domain)
    rows = select_rows(data, "valid", params.registry.max_valid_users, params.eval.seed)
    if rows.empty:
        raise ValueError("the prepared data has no validation rows to gate a candidate on")

    def scores(serving: Params) -> dict:
        return served_metrics(params, Recommender.load(serving), data, rows)
    return scores


def register_candidate(params: Params) -> Decision:
    """`llmrec register`: the pipeline's model becomes a version; it serves if it passes the gate."""
    return ModelRegistry(params).register(params, validation_scorer(params))


def reload_server(params: Params) -> tuple[str, dict | None]:
    """Ask the `llmrec serve` at orchestration.serve_url to reload: (a sentence saying what happened, the service's
    /healthz after the swap, or None when it did not reload)."""
    url = params.orchestration.serve_url
    if not url:
        return "", None
    import httpx

    from .serve.auth import TOKEN_ENV

    token = os.environ.get(TOKEN_ENV)  # the token the service was started with, if any
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.post(url.rstrip("/") + "/reload", headers=headers, timeout=300)
    except httpx.HTTPError:
        return f"; no server answered at {url} (it serves this version when it starts)", None
    if response.status_code != 200:
        return f"; {url} refused the reload ({response.status_code}: {response.text[:200]})", None
    return f"; {url} reloaded", response.json()


def switch(params: Params, version: int | None) -> tuple[Version, str]:
    """Serve `version` (promote), or with None the champion before the current one (rollback)."""
    registry = ModelRegistry(params)
    chosen = registry.rollback() if version is None else registry.promote(version)
    return chosen, reload_server(params)[0]
