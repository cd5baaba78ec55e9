"""Who may change what the service serves (POST /items, POST /reload).

With a token configured (`LLMREC_API_TOKEN`, or `--token-file`), those endpoints need
`Authorization: Bearer <token>`, compared in constant time; a missing or wrong token is a 401. Without one
they are open only to this machine: `llmrec serve` refuses to bind an address other than loopback, and a
request from another address (an app run behind some other server) is a 403. Reads stay open.
"""
from __future__ import annotations

import hmac
import ipaddress
import os
from pathlib import Path

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..errors import UserError

TOKEN_ENV = "LLMREC_API_TOKEN"
MIN_TOKEN_CHARS = 16


def load_token(token_file: Path | None = None, environ: dict | None = None) -> str | None:
    """The API token from `token_file` if given, else from $LLMREC_API_TOKEN; None when neither is set. A token
    that is empty, short or holds whitespace or control characters is refused (a UserError naming its source)."""
    environ = os.environ if environ is None else environ
    if token_file is not None:
        try:
            text, source = token_file.read_text(encoding="utf-8"), str(token_file)
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{token_file}: cannot read the API token file ({getattr(e, 'strerror', None) or e})") \
                from None
        text = text.strip()  # a trailing newline is how files end
    elif TOKEN_ENV in environ:
        text, source = environ[TOKEN_ENV], f"${TOKEN_ENV}"
    else:
        return None
    if len(text) < MIN_TOKEN_CHARS or any(c.isspace() or not c.isprintable() for c in text):
        raise UserError(f"{source}: the API token must be at least {MIN_TOKEN_CHARS} characters, without spaces "
                        f"or control characters (e.g. `python -c 'import secrets; print(secrets.token_urlsafe())'`)")
    return text


def is_loopback(host: str | None) -> bool:
    """Is `host` this machine only (localhost, 127.0.0.0/8, ::1)? Any other name or address counts as exposed."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve state changes unauthenticated beyond this machine: a non-loopback bind needs a token."""
    if token is None and not is_loopback(host):
        raise UserError(f"--host {host}: serving beyond this machine needs an API token for POST /items and POST "
                        f"/reload; set ${TOKEN_ENV} or pass --token-file (or bind 127.0.0.1)")


def state_change_guard(token: str | None):
    """A FastAPI dependency for the endpoints that change state: the bearer token when one is configured, else
    a loopback client."""
    bearer = HTTPBearer(auto_error=False, description=f"the token in ${TOKEN_ENV} or --token-file")
    expected = token.encode() if token is not None else None

    async def guard(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if expected is None:
            client = request.client.host if request.client else None
            if not is_loopback(client):
                raise HTTPException(403, "state changes are open only to this machine when no API token is set")
            return
        given = credentials.credentials.encode() if credentials is not None else b""
        if not hmac.compare_digest(given, expected):
            raise HTTPException(401, "a valid `Authorization: Bearer <token>` is required",
                                headers={"WWW-Authenticate": "Bearer"})

    return guard
