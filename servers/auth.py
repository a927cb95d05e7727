"""Who may use a model server: one shared secret for every model server, checked at the handshake.

The token comes from `MODEL_SERVER_TOKEN`, or from the file named by `MODEL_SERVER_TOKEN_FILE` (a
Docker/Modal secret), never from a command-line flag (other users of the machine can read those).
Clients send it as `Authorization: Bearer <token>`. Without a token a server only binds to
loopback, unless `--insecure` says otherwise, loudly.

    python -m servers.auth FILE    write a token to FILE for docker compose (MODEL_SERVER_TOKEN's
                                   value, else a new random one if FILE has none yet)
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import sys
from pathlib import Path
from urllib.parse import urlparse

TOKEN_ENV = "MODEL_SERVER_TOKEN"
TOKEN_FILE_ENV = "MODEL_SERVER_TOKEN_FILE"
MODAL_PROXY_HEADERS = {"Modal-Key": "MODAL_PROXY_KEY", "Modal-Secret": "MODAL_PROXY_SECRET"}
"""On Modal the model servers sit behind its proxy auth (modal_app.py): these headers get through it."""


class InsecureBind(RuntimeError):
    """Binding beyond loopback without a token."""


def load_token() -> str | None:
    """The shared secret, or None when there is none (loopback only)."""
    if path := os.environ.get(TOKEN_FILE_ENV):
        token = Path(path).read_text().strip()
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
    return token or None


def auth_headers(url: str) -> dict[str, str]:
    """What a client sends to our model server at `url`: the environment's token, and Modal's proxy
    credentials if the server is on Modal; nothing without either."""
    token = load_token()
    return ({"Authorization": f"Bearer {token}"} if token else {}) | modal_proxy_headers(url)


def modal_proxy_headers(url: str) -> dict[str, str]:
    """Modal-Key / Modal-Secret for a `*.modal.run` URL when the environment has them (the bot on
    Modal); never for anyone else's server."""
    if not (urlparse(url).hostname or "").endswith(".modal.run"):
        return {}
    return {name: os.environ[env] for name, env in MODAL_PROXY_HEADERS.items() if os.environ.get(env)}


def is_authorized(header: str | None, token: str | None) -> bool:
    """Constant-time check of an `Authorization` header against the token (no token: anyone)."""
    if token is None:
        return True
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None, insecure: bool) -> None:
    """Refuse a non-loopback address without a token, unless `insecure`."""
    if token is None and not insecure and not is_loopback(host):
        raise InsecureBind(
            f"refusing to listen on {host} without a token: set {TOKEN_ENV} (or {TOKEN_FILE_ENV}) "
            "for this server and its clients, or pass --insecure to serve anyone who can reach it"
        )


def ensure_token_file(path: Path) -> None:
    """MODEL_SERVER_TOKEN's value, else keep the file's token, else a new random one; owner-only."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token and path.exists() and path.read_text().strip():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text((token or secrets.token_urlsafe(32)) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m servers.auth FILE")
    ensure_token_file(Path(sys.argv[1]))
