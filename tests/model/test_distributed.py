"""Data-parallel training through `accelerate launch --multi_gpu`: without CUDA the two processes form a
CPU (gloo) group, so this is the same code path as multi-GPU DDP."""
import json
import os
import subprocess
import sys

from safetensors.torch import load_file


def test_two_process_ddp_training_on_cpu(tiny_bert, sample_prepared):
    params = sample_prepared("ddp", model={"name_or_path": str(tiny_bert), "user_max_tokens": 48},
                             max_steps=3, batch_size=8, domain_negatives=1, max_examples_per_user=1,
                             checkpoint_every=2)
    path = params.base_dir / "params-ddp.yaml"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "llmrec_core", "train", "--params", str(path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run = params.resolve(params.train.run_dir)
    cost = json.loads((run / "cost_train.json").read_text())
    assert cost["world_size"] == 2 and cost["global_steps"] == 3
    # a global batch is both processes' batches: 3 steps x 8 rows x 2 processes
    assert cost["examples_seen"] == 3 * 8 * 2 and cost["batch_size"] == 16
    # the main process (whose record this is) trained on its own 8 rows per step, not on the global batch
    processed = cost["samples_per_s"] * cost["seconds_by_phase"]["train"]
    assert abs(processed - 3 * 8) < 1, processed
    weights = load_file(str(run / "weights.safetensors"))
    initial = load_file(str(tiny_bert / "model.safetensors"))
    changed = [k for k, v in initial.items() if f"backbone.{k}" in weights and not (weights[f"backbone.{k}"] == v).all()]
    assert changed
