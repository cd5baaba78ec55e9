# CPU image by default. For CUDA: docker build --build-arg BASE=nvidia/cuda:12.4.1-runtime-ubuntu22.04 ...
# (the base must provide python3.11; torch is pinned in pyproject.toml).
ARG BASE=python:3.11-slim
FROM ${BASE}
ENV PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
RUN apt-get update && apt-get install -y --no-install-recommends make git && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . .
# DVC needs a repository around dvc.yaml; the image has no .git (see .dockerignore), so start one.
RUN git init -q
# The same install as the README (make venv), so the image runs exactly what was tested.
RUN make venv
# The default command trains on the sample, then serves it on the published port; it needs the API token that
# POST /items and POST /reload require (serve refuses --host 0.0.0.0 without one; never bake a token into the image):
#   docker run -p 8000:8000 -e LLMREC_API_TOKEN="$(python3 -c 'import secrets; print(secrets.token_urlsafe())')" <image>
EXPOSE 8000
CMD ["scripts/docker_serve.sh"]
