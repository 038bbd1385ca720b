"""Compare two trainings by their *updates*: float noise from reduction order is tiny next
to an update, while a wrong loss scale or a missing gradient average changes it by O(1)."""

import lightning as L
import torch

from gicl.codecs.base import build_codec


def initial_state(codec_config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """The weights the runner starts stage 0 from (it seeds, then builds the codec)."""
    L.seed_everything(seed, verbose=False)
    return build_codec(codec_config).state_dict()


def assert_same_updates(a: dict, b: dict, init: dict, rel: float = 1e-3, floor: float = 1e-6) -> None:
    """Every tensor that moved by more than `floor` moved the same way in `a` and `b`.

    Tensors below the floor only carry noise: e.g. conv biases right before a GroupNorm,
    whose true gradient is zero."""
    compared = 0
    for key, start in init.items():
        if not start.is_floating_point():
            continue
        step = (a[key] - start).norm()
        if step > floor:
            assert (b[key] - a[key]).norm() <= rel * step, f"{key}: updates differ"
            compared += 1
    assert compared > len(init) // 4, f"only {compared} of {len(init)} tensors moved"
