"""RD curves while training: scalars, the RD figure and reconstruction grid land in the
event files, and a real `tensorboard` server on loopback serves the RD series back."""

import json
import socket
import subprocess
import sys
import time
import urllib.request

from conftest import run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, deadline: float):
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.loads(r.read())
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


def test_smoke_run_serves_rd_curves_over_tensorboard_http(tmp_path):
    proc = run_cli("fit", "--recipe", "progic", "--profile", "smoke", "--run-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    tb = tmp_path / "train" / "tb"
    events = sorted(tb.glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(events[0]), size_guidance={"images": 0})
    acc.Reload()
    assert {"rd/curve", "rd/reconstructions"} <= set(acc.Tags()["images"])
    assert {f"rd/psnr/point{i}" for i in range(5)} <= set(acc.Tags()["scalars"])

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(tb), "--host", "127.0.0.1",
         "--port", str(port), "--load_fast", "false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        base, deadline = f"http://127.0.0.1:{port}", time.time() + 90
        series = get_json(f"{base}/data/plugin/scalars/scalars?run=.&tag=rd%2Fpsnr%2Fpoint4", deadline)
        assert len(series) >= 1 and all(len(row) == 3 for row in series)  # [wall_time, step, value]
        expected = [e.value for e in acc.Scalars("rd/psnr/point4")]
        assert [round(row[2], 4) for row in series] == [round(v, 4) for v in expected]
        layout = get_json(f"{base}/data/plugin/custom_scalars/layout", deadline)
        assert "rate-distortion" in json.dumps(layout)
    finally:
        server.terminate()
        server.wait(timeout=30)
