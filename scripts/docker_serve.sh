#!/usr/bin/env sh
# The image's default command: train on the embedded sample (`make pipeline`: dvc repro of every stage, then
# register), then serve it in the foreground on the published port. Refuses at once, before training, without the
# API token that `llmrec serve` needs to listen beyond loopback.
#   docker run -p 8000:8000 -e LLMREC_API_TOKEN=... <image>
# LLMREC_SERVE_HOST (default 0.0.0.0) and PARAMS (default params.yaml) override what is bound and trained.
set -eu
if [ -z "${LLMREC_API_TOKEN:-}" ]; then
    echo "set LLMREC_API_TOKEN (at least 16 characters): POST /items and POST /reload need it off loopback" >&2
    exit 2
fi
make pipeline PARAMS="${PARAMS:-params.yaml}"
exec .venv/bin/llmrec serve --params "${PARAMS:-params.yaml}" --host "${LLMREC_SERVE_HOST:-0.0.0.0}"
