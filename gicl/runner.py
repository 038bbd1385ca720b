"""Runs a resolved recipe: one Lightning Trainer per stage, chained through model files.

Run dir layout: `<run_dir>/<stage>/{config.yaml, checkpoints/last.ckpt, tb/, final.pt, done}`.
The same command again skips stages that have `done`, resumes the unfinished stage from
`last.ckpt` (weights, optimizers, schedulers, iteration and data position), and starts the
rest; `init: previous` loads the previous stage's `final.pt`.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.strategies import DDPStrategy

from gicl.atomic import atomic_write_bytes
from gicl.callbacks.checkpoint import AtomicCheckpointIO, IterationCheckpoint
from gicl.callbacks.codebook import CodebookUsage
from gicl.callbacks.frequency_table import FrequencyTable
from gicl.callbacks.preemption import Preemption
from gicl.callbacks.progress import IterationProgressBar
from gicl.callbacks.rd_curves import RDCurves
from gicl.callbacks.rng_state import IterationSeed
from gicl.callbacks.throughput import Throughput
from gicl.codecs.base import Codec, build_codec
from gicl.errors import RecipeError, UserError
from gicl.losses.perceptual import perceptual_for_policy
from gicl.model_file import read_codec_weights, save_model_file
from gicl.recipes import dump, load_yaml
from gicl.training import module_class

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


def build_trainer(trainer_cfg: dict[str, Any], stage: dict[str, Any], stage_dir: Path,
                  callbacks: list[L.Callback]) -> L.Trainer:
    on_gpu = torch.cuda.is_available() and trainer_cfg["accelerator"] in ("auto", "gpu", "cuda")
    precision = trainer_cfg["precision"]
    if precision == "auto":
        precision = "bf16-mixed" if on_gpu else "32-true"
    strategy: Any = trainer_cfg["strategy"]
    if strategy in ("auto", "ddp") and process_count(trainer_cfg) > 1:
        # GAN stages use the discriminator in the generator step and not the codec in the
        # discriminator step: DDP must look for unused parameters (DESIGN "Things that bite").
        strategy = DDPStrategy(find_unused_parameters=True,
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


def load_codec_weights(codec: Codec, path: Path) -> None:
    """Initialise from a model file or a Lightning checkpoint of the same codec."""
    config, state, _ = read_codec_weights(path)
    name = config.get("name")
    if name != codec.codec_id:
        raise UserError(f"{path} holds a '{name}' codec; this stage trains '{codec.codec_id}'")
    result = codec.load_state_dict(state, strict=False)
    if result.missing_keys:
        log.info("init from %s: %d parameters start fresh (%s ...)", path, len(result.missing_keys),
                 result.missing_keys[0])
    if result.unexpected_keys:
        log.info("init from %s: %d stored tensors unused", path, len(result.unexpected_keys))


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


def _comparable(config: dict[str, Any], stage: str) -> dict[str, Any]:
    return {"codec": config["codec"], "stage": config["stages"][stage]}


def run_stage(config: dict[str, Any], name: str, stage_dir: Path, previous: Path | None,
              restart: bool = False) -> bool:
    """Train one stage to its iteration budget; returns False when interrupted."""
    stage = dict(config["stages"][name], _name=name, _recipe=config["name"])
    tcfg = config["trainer"]
    cfg_path = stage_dir / "config.yaml"
    if cfg_path.is_file():
        saved = load_yaml(cfg_path)
        if _comparable(saved, name) != _comparable(config, name):
            raise UserError(f"{stage_dir} was started with a different codec or stage config; "
                            "use another --run-dir or delete it")

    index = list(config["stages"]).index(name)
    L.seed_everything(tcfg["seed"] + index, workers=True, verbose=False)
    codec = build_codec(config["codec"])
    if stage["init"] == "previous":
        load_codec_weights(codec, previous)
    elif stage["init"]:
        load_codec_weights(codec, Path(stage["init"]))
    freeze(codec, stage["frozen"], f"stages.{name}.frozen")
    perceptual, status = perceptual_for_policy(stage["perceptual"], stage["loss"].get("perceptual", 0))
    saved = dict(config, runtime={"stage": name, "perceptual": status})
    atomic_write_bytes(cfg_path, dump(saved).encode())

    module = module_class(stage["module"])(codec, stage, perceptual)
    ckpt_dir = stage_dir / "checkpoints"
    batch = stage["batch_size"] or config["data"]["batch_size"]
    callbacks = [  # order matters: the table is flushed before a checkpoint is written
        IterationSeed(tcfg["seed"] + index),
        FrequencyTable(tcfg["ckpt_every_n_steps"], stage["frequency_table_from"]),
        IterationCheckpoint(ckpt_dir, tcfg["ckpt_every_n_steps"]),
        Preemption(ckpt_dir / "last.ckpt"),
        Throughput(tcfg["log_every_n_steps"], batch),
        IterationProgressBar(stage["max_steps"], name),
        LearningRateMonitor(logging_interval="step"),
        CodebookUsage(tcfg["log_every_n_steps"]),
        RDCurves(),
    ]
    trainer = build_trainer(tcfg, stage, stage_dir, callbacks)
    data = RecipeData(config["data"], batch, tcfg["seed"] + index)
    last = resume_checkpoint(stage_dir, restart)
    if last is not None:
        log.info("stage %s: resuming from %s", name, last)
    if tcfg["compile"]:
        module.codec = torch.compile(module.codec)
    trainer.fit(module, datamodule=data, ckpt_path=str(last) if last else None)
    if trainer.interrupted or module.iteration < stage["max_steps"]:
        return False
    if trainer.is_global_zero:
        save_model_file(codec, stage_dir / "final.pt",
                        {"recipe": config["name"], "stage": name, "iteration": module.iteration})
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
            needs_previous = config["stages"][name]["init"] == "previous"
            if needs_previous and (previous is None or not previous.is_file()):
                raise UserError(f"stage {name} starts from the previous stage, whose weights "
                                f"{previous} do not exist yet: run without --stage first")
            log.info("stage %s: training %d iterations in %s", name,
                     config["stages"][name]["max_steps"], stage_dir)
            if not run_stage(config, name, stage_dir, previous, restart):
                raise KeyboardInterrupt
        elif (stage_dir / "done").is_file():
            log.info("stage %s: done, skipped (%s)", name, stage_dir / "done")
        previous = stage_dir / "final.pt"
    return run_dir


