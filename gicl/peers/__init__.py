"""Peers for `gicl bench codec --against NAME`: other codecs timed in the same run, on the same
input and thread count, so that gicl's figures are always read next to a reference.

Three families:
- `compressai:ARCH:QUALITY` — a CompressAI zoo model built with `pretrained=False` (this
  machine is offline; latency does not depend on the weights), `update()` for its CDF tables,
  then its own `compress`/`decompress` (rANS strings, so the bits are real). In this process.
- `pillow:jpeg|webp|avif:QUALITY` — the classical codecs Pillow ships, encoded to bytes and
  decoded back: file-size and PSNR baselines. In this process.
- `official-glc:CHECKOUT`, `official-controlgic:CHECKOUT` — the authors' own inference code
  from a checkout of jzyustc/GLC or lianqi1008/Control-GIC, run in a child process
  (`gicl.peers.official`: their modules carry their own imports and global state), whose
  peak RSS is its own.

In-process peers run after gicl's codec has been measured, so gicl's peak RSS is its own;
theirs shares the process and is not reported.
"""

from __future__ import annotations

import io
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gicl.errors import UserError

FORMS = ("compressai:ARCH:QUALITY (e.g. compressai:bmshj2018-hyperprior:8), "
         "pillow:jpeg|webp|avif:QUALITY (e.g. pillow:jpeg:75), "
         "official-glc:CHECKOUT, official-controlgic:CHECKOUT (checkouts of jzyustc/GLC, "
         "lianqi1008/Control-GIC)")
PILLOW_FORMATS = {"jpeg": "JPEG", "webp": "WEBP", "avif": "AVIF"}
OFFICIAL = {"official-glc": "glc", "official-controlgic": "controlgic"}


@dataclass(frozen=True)
class Peer:
    """A parsed `--against` name: family, what it names, and the quality where it has one."""

    spec: str
    family: str  # "compressai", "pillow" or "official"
    name: str  # zoo architecture, Pillow format, or official codec ("glc", "controlgic")
    quality: int | None = None
    checkout: Path | None = None


def parse_peer(spec: str) -> Peer:
    """Check a peer name before anything heavy loads: a typo fails in a blink, with the forms."""
    family, _, rest = spec.partition(":")
    if family in OFFICIAL and rest:
        return Peer(spec, "official", OFFICIAL[family], checkout=Path(rest).expanduser())
    name, _, quality = rest.partition(":")
    if family in ("compressai", "pillow") and name and quality.isdigit():
        if family == "pillow" and name not in PILLOW_FORMATS:
            raise UserError(f"--against {spec}: Pillow codecs are {', '.join(PILLOW_FORMATS)}")
        return Peer(spec, family, name, int(quality))
    raise UserError(f"--against {spec}: unknown peer; the forms are {FORMS}")


def check_peer(peer: Peer) -> None:
    """Fail on what can be checked before measuring: zoo names, qualities, AVIF support,
    the checkout's layout (so a long gicl measurement never ends in a path typo)."""
    if peer.family == "compressai":
        from compressai.zoo.image import cfgs  # architecture → {quality: channels}

        if peer.name not in cfgs:
            raise UserError(f"--against {peer.spec}: CompressAI's zoo has no {peer.name!r}; "
                            f"its image models are {', '.join(cfgs)}")
        if peer.quality not in cfgs[peer.name]:
            raise UserError(f"--against {peer.spec}: {peer.name} has qualities "
                            f"{min(cfgs[peer.name])}–{max(cfgs[peer.name])}")
    elif peer.family == "pillow":
        from PIL import features

        if peer.name == "avif" and not features.check("avif"):
            raise UserError(f"--against {peer.spec}: AVIF is not available in this Pillow")
        if not 0 <= peer.quality <= 100:
            raise UserError(f"--against {peer.spec}: quality must be 0–100")
    else:
        from gicl.peers.official import check_checkout

        check_checkout(peer.name, peer.checkout)


def timed(warmup: int, repeats: int, encode: Callable[[], Any],
          decode: Callable[[Any], Any]) -> tuple[Any, Any, list[float], list[float]]:
    """`warmup` untimed then `repeats` timed encode→decode pairs; the last payload and output."""
    enc_ms, dec_ms = [], []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        payload = encode()
        t1 = time.perf_counter()
        out = decode(payload)
        t2 = time.perf_counter()
        if i >= warmup:
            enc_ms.append((t1 - t0) * 1e3)
            dec_ms.append((t2 - t1) * 1e3)
    return payload, out, enc_ms, dec_ms


def psnr_u8(a: Any, b: Any) -> float:
    """PSNR in dB of two uint8 arrays (peak 255)."""
    import numpy as np

    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def run_compressai(peer: Peer, x: Any, warmup: int, repeats: int) -> dict[str, Any]:
    """A zoo architecture with random weights: real rANS strings, padded to its stride (64)."""
    import torch
    import torch.nn.functional as F
    from compressai.zoo import image_models

    model = image_models[peer.name](quality=peer.quality, pretrained=False).eval()
    model.update(force=True)
    h, w = x.shape[-2:]
    xp = F.pad(x, (0, -w % 64, 0, -h % 64), mode="replicate")
    with torch.no_grad():
        out, _, enc, dec = timed(warmup, repeats, lambda: model.compress(xp),
                                 lambda o: model.decompress(o["strings"], o["shape"]))
    nbytes = sum(len(s) for strings in out["strings"] for s in strings)
    return {"params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "bytes": nbytes, "enc": enc, "dec": dec,
            "note": "random weights (pretrained=False)"}


def run_pillow(peer: Peer, x: Any, warmup: int, repeats: int) -> dict[str, Any]:
    """Encode the 8-bit image to bytes and decode it back; bpp and PSNR against that input."""
    import numpy as np
    import torch
    from PIL import Image

    arr = (x[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    image = Image.fromarray(arr)

    def encode() -> bytes:
        buf = io.BytesIO()
        image.save(buf, format=PILLOW_FORMATS[peer.name], quality=peer.quality)
        return buf.getvalue()

    def decode(data: bytes) -> Any:
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    data, decoded, enc, dec = timed(warmup, repeats, encode, decode)
    return {"bytes": len(data), "psnr_db": psnr_u8(arr, decoded), "enc": enc, "dec": dec}


def run_official(peer: Peer, x: Any, warmup: int, repeats: int, threads: int) -> dict[str, Any]:
    """The authors' code in a child process (`python -m gicl.peers.official`), on the
    same input tensor (handed over in a file) and thread count; it prints one JSON line."""
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "input.pt"
        torch.save(x.cpu(), path)
        cmd = [sys.executable, "-m", "gicl.peers.official", peer.name, str(peer.checkout),
               str(path), str(warmup), str(repeats), str(threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["(no message)"]
        raise UserError(f"--against {peer.spec}: the official code failed in {peer.checkout}: "
                        f"{tail[0]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_peers(peers: list[Peer], x: Any, warmup: int, repeats: int,
                  gicl_ms: tuple[float, float]) -> list[dict[str, Any]]:
    """Each peer on the same input x ((1, 3, H, W) in [0, 1], CPU), with gicl's medians
    (compress, decompress) turned into ratios gicl / peer."""
    import torch

    h, w = x.shape[-2:]
    x = x.cpu()
    results = []
    for peer in peers:
        if peer.family == "compressai":
            r = run_compressai(peer, x, warmup, repeats)
        elif peer.family == "pillow":
            r = run_pillow(peer, x, warmup, repeats)
        else:
            r = run_official(peer, x, warmup, repeats, torch.get_num_threads())
        enc, dec = statistics.median(r.pop("enc")), statistics.median(r.pop("dec"))
        row = {"peer": peer.spec, "compress_ms": enc, "decompress_ms": dec,
               "ratio_compress": gicl_ms[0] / enc, "ratio_decompress": gicl_ms[1] / dec,
               "ratio": (gicl_ms[0] + gicl_ms[1]) / (enc + dec), **r}
        if "bytes" in row:
            row["bpp"] = 8 * row["bytes"] / (h * w)
        results.append(row)
    return results


def peer_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Human lines, one per peer (plus its note): times, size, memory, gicl / peer."""
    lines = []
    for r in rows:
        size = f", {r['bytes']} bytes = {r['bpp']:.4f} bpp" if "bytes" in r else ""
        psnr = f", PSNR {r['psnr_db']:.2f} dB" if "psnr_db" in r else ""
        rss = f", peak RSS {r['peak_rss_mb']:.0f} MB" if "peak_rss_mb" in r else ""
        lines.append(f"  vs {r['peer']}: compress {r['compress_ms']:.1f} ms, decompress "
                     f"{r['decompress_ms']:.1f} ms{size}{psnr}{rss}; gicl/peer = "
                     f"{r['ratio']:.2f}× (compress {r['ratio_compress']:.2f}×, "
                     f"decompress {r['ratio_decompress']:.2f}×)")
        if r.get("note"):
            lines.append(f"      {r['note']}")
    return lines
