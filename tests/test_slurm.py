"""slurm/launch.sh on a real one-node SLURM cluster: a run to completion, then a run that is
preempted (USR1), requeued, and resumes from its checkpoint.

Installs Debian's slurmctld/slurmd/munge and starts daemons as root, so it runs with
`make test-slurm`, not in the default suite (marker `slurm`)."""

import os
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO

pytestmark = pytest.mark.slurm


def sh(*cmd: str, check: bool = True) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if check and done.returncode:
        raise AssertionError(f"{cmd}: {done.stderr}")
    return done.stdout.strip()


def etc_snapshot() -> dict[str, bytes | None]:
    """Every file under /etc/slurm and /etc/munge with its bytes (None for a directory)."""
    files: dict[str, bytes | None] = {}
    for top in (Path("/etc/slurm"), Path("/etc/munge")):
        for path in [top, *top.rglob("*")] if top.exists() else []:
            files[str(path)] = path.read_bytes() if path.is_file() else None
    return files


def daemons() -> set[str]:
    return set(sh("pgrep", "-x", "slurmctld|slurmd|munged", check=False).split())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("the SLURM test starts slurmctld/slurmd and needs root")
    script, state = REPO / "tests" / "slurm" / "cluster.sh", tmp_path_factory.mktemp("slurm")
    etc_before, daemons_before = etc_snapshot(), daemons()
    sh("bash", str(script), "start", str(state))
    yield True
    print(sh("bash", str(script), "stop", str(state)))
    assert daemons() == daemons_before, "a daemon the test started is still running"
    assert etc_snapshot() == etc_before, "/etc/slurm or /etc/munge differ from before the test"


def submit(run_dir: Path, log: Path, *extra: str) -> str:
    out = sh("sbatch", "--parsable", f"--output={log}", "--open-mode=append", "--chdir", str(REPO),
             "--cpus-per-task=1", str(REPO / "slurm" / "launch.sh"),
             "--recipe", "progic", "--profile", "smoke", "--run-dir", str(run_dir), *extra)
    return out.split(";")[0]


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def job_state(job: str) -> str:
    return sh("scontrol", "show", "job", job, "-o", check=False)


def iteration(ckpt: Path) -> int:
    try:
        return torch.load(ckpt, weights_only=True)["gicl"]["iteration"] if ckpt.is_file() else -1
    except Exception:  # being replaced right now
        return -1


def test_launch_runs_to_completion(cluster, tmp_path):
    run = tmp_path / "run"
    job = submit(run, tmp_path / "job.log")
    wait_until(lambda: "JobState=COMPLETED" in job_state(job) or "FAILED" in job_state(job), 300, "job")
    assert "JobState=COMPLETED" in job_state(job), (tmp_path / "job.log").read_text()[-3000:]
    assert (run / "train" / "done").read_text().strip() == "6"


def test_preempted_job_requeues_and_resumes(cluster, tmp_path):
    run, log = tmp_path / "run", tmp_path / "job.log"
    ckpt = run / "train" / "checkpoints" / "last.ckpt"
    job = submit(run, log, "--set", "stages.train.max_steps=60", "--set", "trainer.ckpt_every_n_steps=50")
    wait_until(lambda: iteration(ckpt) >= 0 or "FAILED" in job_state(job), 300, "first checkpoint")
    sh("scancel", "--signal=USR1", job)  # what SLURM sends 90 s before the time limit
    wait_until(lambda: "Restarts=1" in job_state(job), 120, "requeue")
    preempted_at = iteration(ckpt)
    assert 0 < preempted_at < 60 and not (run / "train" / "done").exists()
    sh("scontrol", "update", f"jobid={job}", "StartTime=now")  # a requeued job waits on BeginTime
    wait_until(lambda: "JobState=COMPLETED" in job_state(job) or "FAILED" in job_state(job), 300, "rerun")
    text = log.read_text()
    assert "JobState=COMPLETED" in job_state(job), text[-3000:]
    assert f"preempted at iteration {preempted_at}" in text
    assert "restart 1" in text and "resuming from" in text
    assert (run / "train" / "done").read_text().strip() == "60"
