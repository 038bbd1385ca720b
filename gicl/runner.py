"""Runs a resolved recipe: one Lightning Trainer per stage, chained through model files.

Run dir layout: `<run_dir>/<stage>/{config.yaml, checkpoints/last.ckpt, tb/, final.pt, done}`.
The same command again skips stages that have `done`, resumes the unfinished stage from
`last.ckpt` (weights, optimizers, schedulers, iteration and data position), and starts the
rest; `init: previous` loads the previous stage's `final.pt`, `init: {from, map, strict}`
another codec's weights under renamed prefixes.

Everything a stage is built from is looked up by name in gicl.registry: its codec, its
training module, its optimizers and schedule, and its callbacks (the recipe's, plus those
the module and the codec ask for). The runner adds only the callbacks every stage needs:
checkpoints, preemption, throughput, progress, learning-rate logging.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.strategies import DDPStrategy

from gicl.atomic import atomic_write_bytes
from gicl.callbacks.checkpoint import AtomicCheckpointIO, IterationCheckpoint
from gicl.callbacks.learning_rates import LearningRates
from gicl.callbacks.preemption import Preemption
from gicl.callbacks.progress import IterationProgressBar
from gicl.callbacks.rng_state import IterationSeed
from gicl.callbacks.throughput import Throughput
from gicl.codecs.base import Codec, build_codec
from gicl.errors import RecipeError, UserError
from gicl.losses.perceptual import perceptual_for_policy
from gicl.model_file import load_codec_weights, save_model_file
from gicl.protocol import stage_protocol
from gicl.recipes import MOVED_KEYS, dump, init_spec, load_yaml, stage_codec
from gicl.registry import CALLBACKS, MODULES
from gicl.training.context import StageContext

log = logging.getLogger("gicl")

# gicl.data's IterableDataset length is exact by construction (equal batches per rank)
warnings.filterwarnings("ignore", message=r".*IterableDataset.*has `__len__` defined")


def default_run_dir(config: dict[str, Any]) -> Path:
    return Path("runs") / config["name"] / config["profile"]


class RecipeData(L.LightningDataModule):
    """Train/val loaders from the recipe's data section, split by rank, resumable mid-epoch."""

    def __init__(self, data: dict[str, Any], batch_size: int, seed: int) -> None:
        super().__init__()
        self.cfg, self.global_batch, self.seed = data, batch_size, seed

    def train_dataloader(self):
        from gicl.data import build_train_loader

        world, rank = self.trainer.world_size, self.trainer.global_rank
        if self.global_batch % world:
            raise RecipeError(f"global batch {self.global_batch} is not divisible by {world} "
                              "processes: change the batch size or the device count")
        loader = build_train_loader(self.cfg, batch_size=self.global_batch // world, rank=rank,
                                    world_size=world, seed=self.seed)
        loader.resume_at(self.trainer.lightning_module.iteration)  # 0, or where it stopped
        return loader

    def val_dataloader(self):
        from gicl.data import build_val_loader

        return build_val_loader(self.cfg)


def process_count(trainer_cfg: dict[str, Any]) -> int:
    devices = trainer_cfg["devices"]
    if devices == "auto":
        devices = max(1, torch.cuda.device_count()) if trainer_cfg["accelerator"] != "cpu" else 1
    count = devices if isinstance(devices, int) else len(devices)
    return count * int(trainer_cfg["num_nodes"])


def _on_gpu(trainer_cfg: dict[str, Any]) -> bool:
    return torch.cuda.is_available() and trainer_cfg["accelerator"] in ("auto", "gpu", "cuda")


def stage_precision(trainer_cfg: dict[str, Any], stage: dict[str, Any]) -> str:
    """The stage's `precision`, else the trainer's; `auto` is bf16-mixed on GPUs and 32-true
    on CPUs. Recorded in the stage's config.yaml (runtime) and its model file's meta."""
    precision = stage["precision"] or trainer_cfg["precision"]
    if precision == "auto":
        precision = "bf16-mixed" if _on_gpu(trainer_cfg) else "32-true"
    return str(precision)


def threads_per_process(config: dict[str, Any]) -> int:
    """`trainer.threads`, or with `auto` this node's usable cores, less one per data-loading
    worker, divided by its training processes (at least 1). More threads than free cores is
    far worse than fewer: every OpenMP region waits for all its threads, and one the scheduler
    has parked behind another process (a DDP peer, a data worker) stalls it for a time slice —
    measured here, a 12×12 convolution took 40 ms with 2 threads beside a busy process and
    14 µs with 1, and the hvq_cgic demo trained 60× faster with 1 thread than with 2."""
    trainer = config["trainer"]
    if trainer["threads"] != "auto":
        return int(trainer["threads"])
    per_node = max(1, process_count(trainer) // int(trainer["num_nodes"]))
    workers = per_node * int(config["data"]["num_workers"])
    return max(1, (len(os.sched_getaffinity(0)) - workers) // per_node)


def build_trainer(trainer_cfg: dict[str, Any], stage: dict[str, Any], stage_dir: Path,
                  callbacks: list[L.Callback]) -> L.Trainer:
    on_gpu = _on_gpu(trainer_cfg)
    precision = stage_precision(trainer_cfg, stage)
    strategy: Any = trainer_cfg["strategy"]
    if strategy in ("auto", "ddp") and process_count(trainer_cfg) > 1:
        # GAN stages use the discriminator in the generator step and not the codec in the
        # discriminator step: DDP must look for unused parameters, or it waits for their
        # gradients forever (and the discriminator's use changes at disc_start, so the graph
        # is not static either). Gradients live in the all-reduce buckets (no copy per step).
        strategy = DDPStrategy(find_unused_parameters=True, gradient_as_bucket_view=True,
                               process_group_backend="nccl" if on_gpu else "gloo")
    plugins: list[Any] = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():  # gicl's Preemption callback requeues (consistently), not Lightning
        plugins.append(SLURMEnvironment(auto_requeue=False))
    return L.Trainer(
        accelerator=trainer_cfg["accelerator"], devices=trainer_cfg["devices"],
        num_nodes=trainer_cfg["num_nodes"], strategy=strategy, precision=precision,
        max_epochs=-1, max_steps=-1,  # the module stops after exactly max_steps iterations
        logger=TensorBoardLogger(save_dir=str(stage_dir), name="tb", version="",
                                 default_hp_metric=False),
        callbacks=callbacks, plugins=plugins, enable_checkpointing=False,
        log_every_n_steps=trainer_cfg["log_every_n_steps"],
        check_val_every_n_epoch=None, val_check_interval=trainer_cfg["val_every_n_steps"],
        limit_val_batches=trainer_cfg["val_batches"], num_sanity_val_steps=0,
        use_distributed_sampler=False,  # gicl.data splits by rank itself (equal batch counts)
        deterministic=trainer_cfg["deterministic"], default_root_dir=str(stage_dir),
    )


def check_train_point(codec: Codec, point: Any, where: str) -> None:
    """A fixed train_point must be a valid operating point of the codec (`{sample: true}`
    draws from the codec's own points)."""
    if point is None or isinstance(point, dict) and point.get("sample"):
        return
    try:
        codec.validate_point(point)
    except UserError as e:
        raise RecipeError(f"{where}: {e}") from None


def freeze(codec: Codec, groups: list[str], where: str) -> None:
    available = codec.parameter_groups()
    for name in groups:
        if name not in available:
            raise RecipeError(f"{where}: no parameter group '{name}' (groups: {', '.join(available)})")
        for p in available[name].parameters():
            p.requires_grad_(False)


def resume_checkpoint(stage_dir: Path, restart: bool = False) -> Path | None:
    """`last.ckpt` to resume from; with `restart` it is set aside (as last.ckpt.bak) instead."""
    last = stage_dir / "checkpoints" / "last.ckpt"
    if restart and last.is_file():
        last.replace(last.with_name("last.ckpt.bak"))
        log.info("--restart: %s moved to last.ckpt.bak; the stage starts over", last)
    return last if last.is_file() else None


def _upgraded(stage: dict[str, Any]) -> dict[str, Any]:
    """A stage section saved by an older gicl, its moved keys at their new places."""
    out = {k: v for k, v in stage.items() if k not in MOVED_KEYS}
    for old, new in MOVED_KEYS.items():
        if old in stage:
            *parents, leaf = new.split(".")
            node = out
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = stage[old]
    return out


def _differences(saved: Any, now: Any, where: str) -> list[str]:
    """Keys whose values differ, among the keys both have (keys added since are not
    differences: a run dir of an older gicl resumes when everything it had is the same)."""
    if isinstance(saved, dict) and isinstance(now, dict):
        return [d for k in saved if k in now for d in _differences(saved[k], now[k], f"{where}.{k}")]
    return [] if saved == now else [where]


def check_resumable(saved: dict[str, Any], config: dict[str, Any], stage: str, stage_dir: Path) -> None:
    if stage not in saved.get("stages", {}):
        raise UserError(f"{stage_dir} holds another recipe's stage; use another --run-dir")
    was = {"codec": saved["stages"][stage].get("codec") or saved["codec"],
           "stage": _upgraded(saved["stages"][stage])}
    now = {"codec": stage_codec(config, stage), "stage": config["stages"][stage]}
    diff = _differences(was, now, "")
    if diff:
        raise UserError(f"{stage_dir} was started with a different codec or stage config "
                        f"({', '.join(d.lstrip('.') for d in diff[:3])}); use another --run-dir or delete it")


def init_weights(codec: Codec, stage: dict[str, Any], name: str, previous: Path | None) -> None:
    """Load the stage's `init` weights into `codec` (nothing for a fresh start)."""
    spec = init_spec(stage["init"], f"stages.{name}.init")
    if spec is None:
        return
    path = previous if spec["from"] == "previous" else Path(spec["from"])
    load_codec_weights(codec, path, spec["map"], spec["strict"])


def build_callbacks(stage: dict[str, Any]) -> list[L.Callback]:
    """The stage's registered callbacks (recipe, module and codec defaults; `false` drops)."""
    return [CALLBACKS.load(name, f"stages.{stage['_name']}.callbacks")(**options)
            for name, options in stage["callbacks"].items() if options is not False]


def run_stage(config: dict[str, Any], name: str, stage_dir: Path, previous: Path | None,
              restart: bool = False) -> bool:
    """Train one stage to its iteration budget; returns False when interrupted."""
    stage = dict(config["stages"][name], _name=name, _recipe=config["name"])
    tcfg = config["trainer"]
    cfg_path = stage_dir / "config.yaml"
    if cfg_path.is_file():
        check_resumable(load_yaml(cfg_path), config, name, stage_dir)

    index = list(config["stages"]).index(name)
    threads = threads_per_process(config)
    torch.set_num_threads(threads)
    L.seed_everything(tcfg["seed"] + index, workers=True, verbose=False)
    own = config["stages"][name]["codec"] is not None
    codec = build_codec(stage_codec(config, name), f"stages.{name}.codec" if own else "codec")
    init_weights(codec, stage, name, previous)
    freeze(codec, stage["frozen"], f"stages.{name}.frozen")
    check_train_point(codec, stage.get("train_point"), f"stages.{name}.train_point")
    loss = stage.get("loss", {})  # modules without LPIPS have no perceptual weight
    lpips = loss.get("lpips", {})
    perceptual, status = perceptual_for_policy(stage["perceptual"], loss.get("perceptual", 0),
                                               lpips.get("net", "vgg"), lpips.get("input", "standard"))
    precision = stage_precision(tcfg, stage)
    saved = dict(config, runtime={"stage": name, "perceptual": status, "precision": precision})
    atomic_write_bytes(cfg_path, dump(saved).encode())

    ckpt_dir = stage_dir / "checkpoints"
    batch = stage["batch_size"] or config["data"]["batch_size"]
    context = StageContext(recipe=config["name"], stage=name, max_steps=stage["max_steps"],
                           global_batch=batch, log_every=tcfg["log_every_n_steps"],
                           ckpt_every=tcfg["ckpt_every_n_steps"], stage_dir=stage_dir,
                           plugins=tuple(config["plugins"]))
    module = MODULES.load(stage["module"], f"stages.{name}.module")(codec, stage, perceptual, context)
    callbacks = [  # order matters: the stage's callbacks (e.g. a table flush) before a checkpoint
        IterationSeed(tcfg["seed"] + index),
        *build_callbacks(stage),
        IterationCheckpoint(ckpt_dir, tcfg["ckpt_every_n_steps"]),
        Preemption(ckpt_dir / "last.ckpt"),
        Throughput(tcfg["log_every_n_steps"], batch),
        IterationProgressBar(stage["max_steps"], name, batch, tcfg["progress_every_s"]),
        LearningRates(),
    ]
    trainer = build_trainer(tcfg, stage, stage_dir, callbacks)
    data = RecipeData(config["data"], batch, tcfg["seed"] + index)
    last = resume_checkpoint(stage_dir, restart)
    # logged once the stage is set up: a bad init file or train_point is the only line
    log.info("stage %s: training %d iterations in %s", name, stage["max_steps"], stage_dir)
    log.info("stage %s: %d intra-op thread(s) per process (trainer.threads: %s)", name, threads,
             tcfg["threads"])
    for label, value, _ in stage_protocol(config, name):
        log.info("stage %s: %-10s %s", name, label, value)
    if last is not None:
        log.info("stage %s: resuming from %s", name, last)
    if tcfg["compile"]:
        module.codec = torch.compile(module.codec)
    trainer.fit(module, datamodule=data, ckpt_path=str(last) if last else None)
    if trainer.interrupted or module.iteration < stage["max_steps"]:
        return False
    if trainer.is_global_zero:
        with module.decoding_weights():  # the EMA weights when the stage keeps an EMA
            save_model_file(codec, stage_dir / "final.pt",
                            {"recipe": config["name"], "stage": name, "iteration": module.iteration,
                             "plugins": config["plugins"], "training_precision": precision,
                             **module.weights_meta()})
        atomic_write_bytes(stage_dir / "done", f"{module.iteration}\n".encode())
    trainer.strategy.barrier("gicl-stage-done")
    return True


def fit(config: dict[str, Any], run_dir: Path | None = None, only_stage: str | None = None,
        restart: bool = False) -> Path:
    """Run (or resume; with `restart`, start unfinished stages over) every stage in order."""
    run_dir = Path(run_dir or default_run_dir(config))
    names = list(config["stages"])
    if only_stage is not None and only_stage not in names:
        raise RecipeError(f"--stage {only_stage}: recipe has stages {', '.join(names)}")
    previous: Path | None = None
    for name in names:
        stage_dir = run_dir / name
        if (only_stage is None or name == only_stage) and not (stage_dir / "done").is_file():
            init = init_spec(config["stages"][name]["init"], f"stages.{name}.init")
            needs_previous = bool(init) and init["from"] == "previous"
            if needs_previous and (previous is None or not previous.is_file()):
                raise UserError(f"stage {name} starts from the previous stage, whose weights "
                                f"{previous} do not exist yet: run without --stage first")
            if not run_stage(config, name, stage_dir, previous, restart):
                raise KeyboardInterrupt
        elif (stage_dir / "done").is_file():
            log.info("stage %s: done, skipped (%s)", name, stage_dir / "done")
        previous = stage_dir / "final.pt"
    return run_dir


