"""Read scalars back from TensorBoard event files (the real files a run wrote)."""

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def scalars(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """tag → [(step, value)] over every event file in tb_dir (resumed runs write several)."""
    out: dict[str, list[tuple[int, float]]] = {}
    for f in sorted(Path(tb_dir).rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return {k: sorted(v) for k, v in out.items()}
