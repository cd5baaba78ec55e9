"""`llmrec serve` in the background on 127.0.0.1, for the demo: start it, show what it serves, stop it by PID.

  python scripts/serve_local.py start [--params FILE]   # waits for /healthz, prints it and an example request
  python scripts/serve_local.py stop
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STATE = REPO / ".run"
PORT = int(os.environ.get("LLMREC_SERVE_PORT", "8000"))
URL = f"http://127.0.0.1:{PORT}"
# space-opera titles of the embedded sample (data/sample): the head should answer with more of that theme
EXAMPLE = {"history": ["Cold Galaxy (Cold Mars Book 1)", "Eclipse of Andromeda (DVD)", "Songs from Titan"], "k": 5}


def _get(path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(URL + path, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def start(params: str) -> None:
    STATE.mkdir(exist_ok=True)
    pid_file = STATE / "serve.pid"
    if pid_file.is_file():
        stop()
    log = open(STATE / "serve.log", "ab")
    llmrec = str(Path(sys.executable).with_name("llmrec"))
    proc = subprocess.Popen([llmrec, "serve", "--params", params, "--port", str(PORT)], cwd=REPO, stdout=log,
                            stderr=log, start_new_session=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    pid_file.write_text(str(proc.pid))
    for _ in range(240):
        if proc.poll() is not None:
            sys.exit(f"error: llmrec serve exited ({proc.returncode}); see {STATE / 'serve.log'}")
        try:
            health = _get("/healthz")
            break
        except OSError:
            time.sleep(0.5)
    else:
        sys.exit(f"error: llmrec serve did not answer on {URL}; see {STATE / 'serve.log'}")
    print(f"llmrec serve on {URL} (pid {proc.pid}, log {STATE / 'serve.log'}; `make down` stops it)")
    print("GET /healthz ->", json.dumps(health))
    answer = _get("/recommend", EXAMPLE)
    print(f"POST /recommend {json.dumps(EXAMPLE)} ->")
    for item in answer["items"]:
        print(f"  {item['rank']}. {item['title']} ({item['domain']})")


def stop() -> None:
    pid_file = STATE / "serve.pid"
    if not pid_file.is_file():
        return
    pid = int(pid_file.read_text())
    try:
        os.killpg(pid, signal.SIGTERM)
        print(f"stopped llmrec serve (pid {pid})")
    except ProcessLookupError:
        pass
    pid_file.unlink()


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("start", "stop"):
        sys.exit(__doc__)
    if sys.argv[1] == "start":
        start(sys.argv[sys.argv.index("--params") + 1] if "--params" in sys.argv else "params.yaml")
    else:
        stop()
