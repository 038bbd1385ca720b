"""`python -m gicl` for the suite: a real child process per call, without its imports.

Every `python -m gicl fit` spends ≈ 8 s importing torch and Lightning (Lightning pulls in
torchmetrics, scipy and torchvision) before it trains for a second; ~90 CLI calls made that
a third of the suite's time. Here one *zygote* per pytest worker imports them once and forks
a child per call. Each call is still its own process, run as `python -m gicl ARGS` runs it:
its own pid, working directory, environment, stdin/stdout/stderr (file descriptors, so C
extensions' output is caught too), exit status, uncaught exceptions printed with their
traceback and exit 1, signals, and `__main__.__spec__` = `gicl.__main__`, so Lightning's DDP
launcher re-runs it as `python -m gicl.__main__ ARGS`.

Fork safety: the zygote only imports, so no OpenMP / intra-op thread pool exists when it
forks; each child starts its own. What the zygote's libraries read from the environment at
import (OpenMP and MKL thread counts) is the worker's: a call that changes one of those runs
as a plain subprocess instead (`needs_fresh_interpreter`).

`serve()` is the zygote (`SERVE`): one JSON request per stdin line, answered by `{"pid": …}`
when the child starts and `{"status": …}` (`os.waitstatus_to_exitcode`) when it ends.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# read when the libraries load, so fixed for the zygote's children
IMPORT_TIME_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "KMP_AFFINITY",
                   "OMP_PROC_BIND", "LD_PRELOAD", "PYTHONPATH", "PYTHONHASHSEED", "PYTHONWARNINGS")
# `python -c`: sys.path[0] is the working directory, as under `python -m gicl`
SERVE = (f"import sys; sys.path.append({str(Path(__file__).parent)!r}); import forked_cli; "
         "sys.path.pop(); forked_cli.serve()")
PRELOAD = ("torch", "lightning.pytorch", "torchvision", "compressai", "lpips", "constriction",
           "gicl.cli", "gicl.runner", "gicl.evaluation.codec_io")


def needs_fresh_interpreter(env: dict[str, str], zygote_env: dict[str, str]) -> bool:
    return any(env.get(k) != zygote_env.get(k) for k in IMPORT_TIME_ENV)


class Zygote:
    """The client side: one zygote process, calls serialised (a pytest worker is sequential)."""

    def __init__(self) -> None:
        self.env = dict(os.environ)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVE], cwd=REPO, env=self.env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.lock = threading.Lock()
        self.answers: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.answers.put(line)
        self.answers.put("")

    def _answer(self, timeout: float | None) -> dict:
        try:
            line = self.answers.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError from None
        if not line:
            raise RuntimeError(f"the CLI zygote exited with {self.proc.wait()}")
        return json.loads(line)

    def run(self, argv: list[str], cwd: Path, env: dict[str, str], timeout: float
            ) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "gicl", *argv]
        with self.lock, tempfile.TemporaryDirectory(prefix="gicl-cli-") as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            request = {"argv": argv, "cwd": str(cwd), "env": env, "stdout": str(out), "stderr": str(err)}
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            pid = self._answer(60)["pid"]
            try:
                status = self._answer(timeout)["status"]
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                self._answer(60)
                raise subprocess.TimeoutExpired(
                    command, timeout,
                    output=out.read_text(errors="replace"), stderr=err.read_text(errors="replace")) from None
            return subprocess.CompletedProcess(
                command, status,
                stdout=out.read_text(errors="replace"), stderr=err.read_text(errors="replace"))

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _child(request: dict) -> None:
    """In the forked child: become `python -m gicl ARGV` and never return."""
    import importlib.util
    import traceback

    import __main__

    code = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, key in ((1, "stdout"), (2, "stderr")):
            os.dup2(os.open(request[key], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's own stdin, for its life
        sys.stdout.reconfigure(line_buffering=True)  # as PYTHONUNBUFFERED would have it
        signal.signal(signal.SIGINT, signal.default_int_handler)
        __main__.__spec__ = importlib.util.find_spec("gicl.__main__")
        sys.argv = [__main__.__spec__.origin, *request["argv"]]
        from gicl.cli import main

        code = main(request["argv"])
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - what the interpreter does with an uncaught exception
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    answers = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        answers.flush()
        pid = os.fork()
        if pid == 0:
            _child(request)
        answers.write(json.dumps({"pid": pid}) + "\n")
        answers.flush()
        _, status = os.waitpid(pid, 0)
        answers.write(json.dumps({"status": os.waitstatus_to_exitcode(status)}) + "\n")
        answers.flush()
