"""Log set-up for the commands that train: one line per event, without Lightning's noise.

gicl's own messages go to stderr as `gicl: ...` through the `gicl` logger only; the root
logger is left alone, so Lightning keeps its single handler and no line is printed twice.
Notices that are known to be harmless for gicl runs are dropped at their source, matched by
message (never a blanket category, so new warnings still show):

- "The `srun` command is available on your system but is not used": gicl's SLURM script
  runs one process per task through `srun` itself; single-process runs on a login node are
  intended.
- the litlogger advertisement Lightning prints at start-up;
- "The number of training batches (N) is smaller than the logging interval": gicl stages
  cross many short epochs and log by iteration, not by epoch;
- torch's `LeafSpec` deprecation raised from inside Lightning's own pytree helper;
- "`torch.jit.script` is deprecated", raised while CompressAI imports torch-geometric
  (CompressAI's point-cloud registry), on every command that touches an entropy model.
"""

from __future__ import annotations

import logging
import sys
import warnings

HARMLESS = (
    r".*`srun` command is available on your system but is not used",
    r".*litlogger",
    r".*The number of training batches \(\d+\) is smaller than the logging interval",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",
    r"`torch.jit.script` is deprecated",
)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time (a test's capture, a redirected run),
    never to a stream that was replaced and closed since the handler was made."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


class _DropHarmless(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        import re

        message = record.getMessage()
        return not any(re.match(pattern, message, re.S) for pattern in HARMLESS)


def quiet_harmless_warnings() -> None:
    """Drop the warnings listed above (by message); every command calls it first."""
    for pattern in HARMLESS:
        warnings.filterwarnings("ignore", message=pattern)


def setup_logging(level: int = logging.INFO) -> None:
    """Idempotent: a `gicl: ` handler on the gicl logger, filters on Lightning's handlers."""
    log = logging.getLogger("gicl")
    log.setLevel(level)
    if not any(getattr(h, "_gicl", False) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("gicl: %(message)s"))
        handler._gicl = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    log.propagate = False
    quiet_harmless_warnings()
    import lightning.pytorch  # noqa: F401  (installs its handlers; filter them below)

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, _DropHarmless) for f in handler.filters):
                handler.addFilter(_DropHarmless())
