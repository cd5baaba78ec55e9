"""The image's default command: an executable script in the build context that refuses without a token at once."""
import json
import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_dockerfile_command_is_an_executable_script_the_build_context_keeps():
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", (REPO / "Dockerfile").read_text(), re.M).group(1))
    script = REPO / cmd[0]
    assert script.is_file() and os.access(script, os.X_OK)
    ignored = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    assert not any(script.relative_to(REPO).parts[0] == pattern.strip("/") for pattern in ignored)


def test_the_image_command_refuses_without_an_api_token_before_it_trains(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LLMREC_API_TOKEN"}
    env["PATH"] = f"{tmp_path}:{env['PATH']}"
    (tmp_path / "make").write_text("#!/bin/sh\necho ran >> \"$0.log\"\n")  # a make that records being called
    (tmp_path / "make").chmod(0o755)
    done = subprocess.run(["sh", str(REPO / "scripts/docker_serve.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "set LLMREC_API_TOKEN" in done.stderr
    assert not (tmp_path / "make.log").exists()
