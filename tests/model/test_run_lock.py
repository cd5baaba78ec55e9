"""One writer per run folder: a second training or index build on the same run is refused (exit code 2 from the
CLI) with the holder's pid, host and command, and leaves the first run's files alone."""
import os
import socket
import subprocess
import sys

import pytest

from llmrec_core.data.stage import run_folder_lock
from llmrec_core.errors import StageBusy
from llmrec_core.serve.recommend import build_index
from llmrec_core.train.loop import train
from llmrec_core.train.sequence import train_sasrec


def test_a_second_training_or_index_build_on_a_busy_run_folder_is_refused_naming_the_holder(sample_prepared,
                                                                                             tiny_bert):
    params = sample_prepared("locked", model={"name_or_path": str(tiny_bert)}, max_steps=1)
    run_dir = params.resolve(params.train.run_dir)
    holder = f"pid {os.getpid()} on {socket.gethostname()}"
    with run_folder_lock(run_dir, "llmrec train"):
        with pytest.raises(StageBusy, match=f"another `llmrec train` is writing it \\(held by {holder}"):
            train(params, show_progress=False)
        with pytest.raises(StageBusy, match=f"held by {holder}"):
            build_index(params, zero_shot=True)
        done = subprocess.run([sys.executable, "-m", "llmrec_core", "train", "--params",
                               str(params.base_dir / "params-locked.yaml")], capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
        assert done.returncode == 2 and f"pid {os.getpid()}" in done.stdout + done.stderr, done.stdout + done.stderr
        assert not (run_dir / "params.json").exists() and not (run_dir / "checkpoint.pt").exists()
    with run_folder_lock(params.resolve(params.sasrec.run_dir), "llmrec train --model sasrec"):
        with pytest.raises(StageBusy, match="--model sasrec"):
            train_sasrec(params, show_progress=False, head="sasrec")
    assert not list(run_dir.parent.glob(f".{run_dir.name}.lock.holder"))  # released: the holder note is gone
