"""`gicl bench train`: training throughput (iterations/s, images/s) for 1, 2, ... processes.

Each process count runs the recipe's first stage as a real `gicl fit` subprocess (DDP over
gloo on CPU, NCCL on GPUs) for `--steps` iterations, validation and periodic checkpoints
off, and reads the steady-state rate the Throughput callback wrote to TensorBoard (the
first iteration — start-up, first allocations — is excluded).

Every run uses `--threads` intra-op threads per process (default 1, `trainer.threads`), the
same in every arm: DDP efficiency is then the images/s of N processes over N × those of
one, not a mix of process and thread scaling (`trainer.threads: auto` would give a lone
process every core and each of two processes half of them). The data workers per process
are the recipe's (`--set data.num_workers=N`), printed beside the figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from gicl.arguments import add_recipe_arguments
from gicl.errors import UserError


def register(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser("train", help="training iterations/s and images/s for 1, 2, ... processes")
    add_recipe_arguments(p)
    p.add_argument("--processes", default="1,2", help="comma-separated process counts (default 1,2)")
    p.add_argument("--steps", type=int, default=8, help="iterations per run (default 8)")
    p.add_argument("--per-process-batch", type=int, default=None,
                   help="images per process and iteration (global batch = this × processes); "
                        "default: the recipe's global batch, split over the processes")
    p.add_argument("--threads", type=int, default=1,
                   help="intra-op threads per process, in every arm (default 1)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def measure(
    recipe: str, profile: str, overrides: list[str], processes: int, steps: int,
    per_process_batch: int | None = None, threads: int = 1,
) -> dict[str, Any]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from gicl.recipes import resolve
    from gicl.runner import threads_per_process

    overrides = [*overrides, f"trainer.threads={threads}"]
    config = resolve(recipe, profile, overrides)
    stage = next(iter(config["stages"]))
    if per_process_batch is not None:
        overrides = [*overrides, f"stages.{stage}.batch_size={per_process_batch * processes}"]
    batch = per_process_batch * processes if per_process_batch else (
        config["stages"][stage]["batch_size"] or config["data"]["batch_size"])
    threads = threads_per_process({**config, "trainer": {**config["trainer"], "devices": processes}})
    with tempfile.TemporaryDirectory(prefix="gicl-bench-train-") as tmp:
        args = [
            sys.executable, "-m", "gicl", "fit", "--recipe", recipe, "--profile", profile,
            "--stage", stage, "--run-dir", tmp, *[a for o in overrides for a in ("--set", o)],
            "--set", f"trainer.devices={processes}", "--set", f"stages.{stage}.max_steps={steps}",
            "--set", f"stages.{stage}.perceptual=auto",
            "--set", "trainer.val_every_n_steps=1000000000", "--set", "trainer.ckpt_every_n_steps=1000000000",
            "--set", f"trainer.log_every_n_steps={steps - 1}",
        ]
        done = subprocess.run(args, capture_output=True, text=True)
        if done.returncode:
            last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode
            raise UserError(f"bench train: fit with {processes} process(es) failed: {last}")
        rates = []
        for f in Path(tmp, stage, "tb").glob("events.out.tfevents.*"):
            acc = EventAccumulator(str(f))
            acc.Reload()
            if "perf/iterations_per_s" in acc.Tags()["scalars"]:
                rates += [e.value for e in acc.Scalars("perf/iterations_per_s")]
    if not rates:
        raise UserError("bench train: the run logged no throughput; use --steps 3 or more")
    rate = rates[-1]
    return {"processes": processes, "threads": threads, "data_workers": config["data"]["num_workers"],
            "global_batch": batch, "iterations_per_s": rate,
            "images_per_s": rate * batch, "steps": steps, "stage": stage}


def run(args: argparse.Namespace) -> int:
    from gicl.machine import describe_machine, machine_line

    if args.per_process_batch is not None and args.per_process_batch < 1:
        raise UserError("--per-process-batch must be at least 1")
    if args.threads < 1:
        raise UserError("--threads must be at least 1")
    if args.steps < 3:
        raise UserError("--steps must be at least 3 (the first iteration is not measured)")
    try:
        counts = [int(p) for p in args.processes.split(",")]
    except ValueError:
        raise UserError(f"--processes expects counts like 1,2, got '{args.processes}'") from None
    info = describe_machine()
    results = []
    for p in counts:
        print(f"bench train: {args.recipe} ({args.profile}), {p} process(es), {args.steps} iterations",
              file=sys.stderr)
        results.append(measure(args.recipe, args.profile, args.overrides, p, args.steps,
                               args.per_process_batch, args.threads))
    if args.json:
        print(json.dumps({"machine": info, "results": results}, indent=2))
        return 0
    print(f"machine: {machine_line(info)}")
    print("processes  threads each  data workers each  global batch  iterations/s  images/s  "
          "vs 1 process")
    one = next((r["images_per_s"] for r in results if r["processes"] == 1), None)
    for r in results:
        ratio = f"{r['images_per_s'] / one:.2f}×" if one else "-"
        print(f"{r['processes']:9d}  {r['threads']:12d}  {r['data_workers']:17d}  "
              f"{r['global_batch']:12d}  {r['iterations_per_s']:12.3f}  {r['images_per_s']:8.2f}  "
              f"{ratio:>12s}")
    return 0
