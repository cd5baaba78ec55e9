"""A local Prefect server (SQLite, 127.0.0.1) and the process serving this project's deployments.

  python scripts/prefect_local.py start   # server on 127.0.0.1:4200 + `python -m flows.serve`, PIDs in .run/
  python scripts/prefect_local.py stop

Then: PREFECT_API_URL=http://127.0.0.1:4200/api prefect deployment run 'train-eval/default' --watch
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STATE = REPO / ".run"
PORT = int(os.environ.get("LLMREC_PREFECT_PORT", "4200"))
API = f"http://127.0.0.1:{PORT}/api"


def _healthy() -> bool:
    try:
        with urllib.request.urlopen(f"{API}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _spawn(name: str, cmd: list[str], env: dict) -> int:
    log = open(STATE / f"{name}.log", "ab")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log, start_new_session=True)
    (STATE / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def _running(name: str) -> bool:
    pid_file = STATE / f"{name}.pid"
    if not pid_file.is_file():
        return False
    try:
        os.kill(int(pid_file.read_text()), 0)
        return True
    except (ProcessLookupError, ValueError):
        return False


def start() -> None:
    STATE.mkdir(exist_ok=True)
    env = {**os.environ, "PREFECT_HOME": str(STATE / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_UI_ENABLED": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    if not _healthy():
        _spawn("prefect-server", [str(Path(sys.executable).with_name("prefect")), "server", "start",
                                  "--host", "127.0.0.1", "--port", str(PORT)], env)
        for _ in range(240):
            if _healthy():
                break
            time.sleep(0.5)
        else:
            sys.exit(f"error: Prefect server did not become healthy on {API}; see {STATE / 'prefect-server.log'}")
    env["PREFECT_API_URL"] = API
    if not _running("prefect-serve"):
        _spawn("prefect-serve", [sys.executable, "-m", "flows.serve"], env)
    print(f"Prefect API {API}; deployments served (log: {STATE / 'prefect-serve.log'})")


def stop() -> None:
    for name in ("prefect-serve", "prefect-server"):
        pid_file = STATE / f"{name}.pid"
        if not pid_file.is_file():
            continue
        pid = int(pid_file.read_text())
        for sig in (signal.SIGTERM, signal.SIGINT):  # serve needs SIGTERM then SIGINT to exit
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            time.sleep(1.0)
        pid_file.unlink()
        print(f"stopped {name} (pid {pid})")


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("start", "stop"):
        sys.exit(__doc__)
    {"start": start, "stop": stop}[sys.argv[1]]()
