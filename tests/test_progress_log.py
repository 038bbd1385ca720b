"""A fit whose output goes to a pipe (a SLURM log, `> file`): plain progress lines with the
stage's iteration count, an honest rate and an ETA; one line per event; no known notices."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import threading
import time

from conftest import REPO

LINE = re.compile(r"^train: iteration (\d+)/(\d+) \(\d+%\) \| ([\d.e+]+) it/s, [\d.e+]+ images/s \| "
                  r"ETA (\S+) \| loss [\d.e+-]+")
NOTICES = ("srun", "litlogger", "smaller than the logging interval", "LeafSpec")


def test_demo_fit_to_a_file_logs_plain_progress_lines_once(tmp_path):
    budget = 10
    proc = subprocess.Popen(
        [sys.executable, "-m", "gicl", "fit", "--recipe", "progic", "--profile", "demo",
         "--run-dir", str(tmp_path / "run"), "--set", f"stages.train.max_steps={budget}",
         "--set", "trainer.progress_every_s=0.5", "--set", "trainer.val_every_n_steps=1000"],
        cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stamped: list[tuple[float, str]] = []  # stdout lines with their arrival time
    errors: list[str] = []
    reader = threading.Thread(target=lambda: errors.extend(proc.stderr))
    reader.start()
    for line in proc.stdout:
        stamped.append((time.monotonic(), line.rstrip("\n")))
    proc.wait(timeout=600)
    reader.join()
    assert proc.returncode == 0, "".join(errors)[-2000:]

    progress = [(t, LINE.match(text)) for t, text in stamped if text.startswith("train: iteration")]
    assert len(progress) >= 3 and all(m for _, m in progress), [s for _, s in stamped]
    iterations = [int(m[1]) for _, m in progress]
    assert all(int(m[2]) == budget for _, m in progress)  # the stage budget, not an epoch
    assert iterations == sorted(set(iterations)) and iterations[-1] == budget
    assert progress[-1][1][4] == "0s"
    # Each line's rate covers the iterations since the line before, over training-loop time
    # (validation is off here, so that is the wall time between the two lines' arrival).
    for (t0, m0), (t1, m1) in itertools.pairwise(progress):
        measured = (int(m1[1]) - int(m0[1])) / (t1 - t0)
        assert abs(float(m1[3]) - measured) <= 0.2 * measured, (m1[0], measured)

    lines = [text for _, text in stamped] + [e.rstrip("\n") for e in errors]
    meaningful = [s for s in lines if re.search(r"[A-Za-z]", s)]
    assert len(meaningful) == len(set(meaningful)), "a line appears twice"
    assert not [s for s in lines for n in NOTICES if n in s]
    assert not [s for s in lines if "\r" in s]
