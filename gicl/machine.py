"""What machine a figure was measured on: printed by every benchmark and stored with eval
results, so numbers from different machines are never compared blindly."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine(device: torch.device | str | None = None) -> dict[str, Any]:
    device = torch.device(device or "cpu")
    info: dict[str, Any] = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "device": str(device), "load_average": list(os.getloadavg()),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def machine_line(info: dict[str, Any]) -> str:
    """One human line: 'AMD EPYC ... (2 cores, 2 torch threads, load 0.4), torch 2.14.1'."""
    gpu = f", {info['gpu']}" if "gpu" in info else ""
    return (f"{info['cpu']} ({info['cores']} cores, {info['torch_threads']} torch threads, "
            f"load {info['load_average'][0]:.1f}){gpu}, torch {info['torch']}")
