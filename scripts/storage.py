"""Local S3-compatible storage for DVC: start/stop moto's server on 127.0.0.1 and point DVC at it.

  python scripts/storage.py start   # starts moto_server, creates the bucket, writes .dvc/config.local
  python scripts/storage.py stop    # stops it by PID
  python scripts/storage.py status

Settings come from the environment, never from committed files:
  LLMREC_S3_ENDPOINT   default http://127.0.0.1:9000 (start only serves 127.0.0.1)
  LLMREC_S3_BUCKET     default llmrec-dvc
  AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY   for the local server `start` makes throwaway ones in
                       .run/storage.env when they are unset (`source .run/storage.env` to use them)
moto keeps objects in memory: they are gone when the server stops. For a store that survives restarts
point LLMREC_S3_ENDPOINT at MinIO or a real S3 endpoint and run only `configure`.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parents[1]
STATE = REPO / ".run"
PID_FILE = STATE / "moto.pid"


class StorageError(RuntimeError):
    pass


def local_credentials() -> None:
    """Throwaway keys for the local server only, kept in .run/storage.env (never committed)."""
    env_file = STATE / "storage.env"
    if not env_file.is_file():
        import secrets

        STATE.mkdir(exist_ok=True)
        env_file.write_text(f"AWS_ACCESS_KEY_ID=local-{secrets.token_hex(4)}\n"
                            f"AWS_SECRET_ACCESS_KEY={secrets.token_hex(16)}\nAWS_DEFAULT_REGION=us-east-1\n")
        env_file.chmod(0o600)
    for line in env_file.read_text().splitlines():
        key, _, value = line.partition("=")
        os.environ.setdefault(key, value)


def settings() -> dict:
    endpoint = os.environ.get("LLMREC_S3_ENDPOINT", "http://127.0.0.1:9000")
    bucket = os.environ.get("LLMREC_S3_BUCKET", "llmrec-dvc")
    missing = [k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not os.environ.get(k)]
    if missing:
        raise StorageError(f"missing credentials: set {' and '.join(missing)} in the environment "
                           "(any non-empty values work for the local server)")
    return {"endpoint": endpoint, "bucket": bucket}


def _client(endpoint: str):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
                        config=Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 2}))


def _alive(endpoint: str) -> bool:
    try:
        _client(endpoint).list_buckets()
        return True
    except Exception:
        return False


def start() -> None:
    if not os.environ.get("AWS_ACCESS_KEY_ID"):
        local_credentials()
    cfg = settings()
    url = urlparse(cfg["endpoint"])
    if url.hostname != "127.0.0.1":
        raise StorageError(f"start serves 127.0.0.1 only, not {url.hostname}; use `configure` for a remote store")
    if not _alive(cfg["endpoint"]):
        STATE.mkdir(exist_ok=True)
        log = open(STATE / "moto.log", "ab")
        proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1",
                                 "-p", str(url.port or 9000)], stdout=log, stderr=log, start_new_session=True)
        PID_FILE.write_text(str(proc.pid))
        for _ in range(100):
            if _alive(cfg["endpoint"]):
                break
            if proc.poll() is not None:
                raise StorageError(f"moto_server exited with {proc.returncode}; see {STATE / 'moto.log'}")
            time.sleep(0.1)
        else:
            raise StorageError(f"moto_server did not answer on {cfg['endpoint']}")
    client = _client(cfg["endpoint"])
    if cfg["bucket"] not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=cfg["bucket"])
    configure()
    print(f"S3 storage on {cfg['endpoint']}, bucket {cfg['bucket']}; DVC remote `storage` configured")


def configure() -> None:
    """Point the DVC remote `storage` at the endpoint and bucket (in .dvc/config.local, not committed)."""
    cfg = settings()
    dvc = str(Path(sys.executable).with_name("dvc"))
    url = f"s3://{cfg['bucket']}/dvc"
    run = lambda *args: subprocess.run([dvc, *args], cwd=REPO, check=True, capture_output=True)  # noqa: E731
    existing = subprocess.run([dvc, "remote", "list", "--local"], cwd=REPO, capture_output=True, text=True).stdout
    if "storage" not in existing.split():
        run("remote", "add", "--local", "--default", "storage", url)
    run("remote", "modify", "--local", "storage", "url", url)
    run("remote", "modify", "--local", "storage", "endpointurl", cfg["endpoint"])


def stop() -> None:
    if not PID_FILE.is_file():
        print("no local storage server recorded")
        return
    pid = int(PID_FILE.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.1)
    except ProcessLookupError:
        pass
    PID_FILE.unlink(missing_ok=True)
    print(f"stopped moto_server (pid {pid})")


def status() -> None:
    cfg = settings()
    print(f"{cfg['endpoint']}: {'up' if _alive(cfg['endpoint']) else 'down'}")


if __name__ == "__main__":
    commands = {"start": start, "stop": stop, "status": status, "configure": configure}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    try:
        commands[sys.argv[1]]()
    except StorageError as e:
        sys.exit(f"error: {e}")
