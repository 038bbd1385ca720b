"""The authors' inference code as a `gicl bench codec` peer, run in its own process.

`python -m gicl.peers.official KIND CHECKOUT INPUT.pt WARMUP REPEATS THREADS` imports the
model from a checkout of the authors' repository (put first on `sys.path`; their modules keep
their own imports and global state, hence the separate process), builds it with the default
initialisation under seed 0 (the machine is offline; latency does not depend on the weights),
fp32, eval, `no_grad`, and prints one JSON line: the timed runs, the parameter count and this
process's peak RSS.

GLC (KIND `glc`, jzyustc/GLC):
GLC's published code has no entropy coder: `GLC_Image.test(x, q)` runs the whole model and
estimates bits. The split timed here follows that call sequence line by line:
- compress = everything the sender computes: `vqgan.encoder` → `enc` → `hyper_enc` →
  `z_vq.get_indices` (the z indices, 14 bits each) → `hyper_dec` → `y_prior_fusion` →
  `forward_four_part_prior` (ŷ and the scales) → `get_y_gaussian_bits` (the estimate);
- decompress = everything the receiver computes from the z indices: `get_quan_feat` →
  `hyper_dec` → `y_prior_fusion` → `forward_four_part_prior` (the same four passes the
  decoder's spatial prior makes, with y standing in for the entropy-decoded values) → `dec`
  → `vqgan.generator`.
The input is padded to a multiple of 64 with replicate padding, as the authors' test script.

Control-GIC (KIND `controlgic`, lianqi1008/Control-GIC): `CGIC.compress(x, dir, huffman,
binary, False)` exactly as its inference.py calls it — one function that encodes, Huffman-codes
the indices and masks into files, reads them back and decodes. Compress is timed up to its
first `decompress_string` (seen through a wrapper of the two coders), decompress from there to
the return. Built from `configs/config_inference.yaml` without `lossconfig` and `ckpt_path`
(the training loss loads pretrained VGG/AlexNet weights, unavailable offline; the checkpoint
is what random weights replace); the EMA copies the config asks for are built, as in the
authors' inference. CPU patch: `Module.cuda` is a no-op (their quantizer calls `.cuda()`
when built). The codebook usage counters that feed its Huffman table are all set to 1 (a
uniform 10-bit code; theirs come from training). The input is center-cropped to a multiple of
16, as its dataset does.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gicl.errors import UserError

LAYOUT = {"glc": ("src/models/image_model.py", "jzyustc/GLC", "official-glc"),
          "controlgic": ("configs/config_inference.yaml", "lianqi1008/Control-GIC",
                         "official-controlgic")}


def check_checkout(kind: str, checkout: Path) -> None:
    """The checkout must hold the authors' module layout; else one line saying what to give."""
    module, repo, prefix = LAYOUT[kind]
    if not (checkout / module).is_file():
        raise UserError(f"--against {prefix}:{checkout}: no {module} there; give a checkout of "
                        f"https://github.com/{repo}, e.g. {prefix}:/path/to/{repo.split('/')[1]}")


def glc_runs(checkout: Path, x: Any, warmup: int, repeats: int) -> dict[str, Any]:
    """Time GLC_Image's compress and decompress halves (module docstring) at quality index 0."""
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(checkout))
    from src.models.image_model import GLC_Image  # the authors' module

    torch.manual_seed(0)
    net = GLC_Image(inplace=True).eval()
    h, w = x.shape[-2:]
    pad = GLC_Image.get_padding_size(h, w, 64)  # (left, right, top, bottom)
    x = F.pad(x * 2 - 1, pad, mode="replicate")  # their from_0_1_to_minus1_1, then padding
    q = 0
    q_enc, q_dec = net.q_enc[q:q + 1], net.q_dec[q:q + 1]
    prior = (net.y_spatial_prior_adaptor_1, net.y_spatial_prior_adaptor_2,
             net.y_spatial_prior_adaptor_3, net.y_spatial_prior)

    def compress() -> tuple[Any, tuple[int, ...], Any, float]:
        y = net.enc(net.vqgan.encoder(x), q_enc)
        z = net.hyper_enc(y)
        index = net.z_vq.get_indices(z)
        shape = (z.shape[0], z.shape[2], z.shape[3], z.shape[1])
        params = net.y_prior_fusion(net.hyper_dec(net.z_vq.get_quan_feat(index, shape)))
        _, y_q, _, scales_hat = net.forward_four_part_prior(
            y, params, *prior, y_spatial_prior_reduction=net.y_spatial_prior_reduction)
        return index, shape, y, net.get_y_gaussian_bits(y_q, scales_hat).sum().item()

    def decompress(index: Any, shape: tuple[int, ...], y: Any) -> Any:
        params = net.y_prior_fusion(net.hyper_dec(net.z_vq.get_quan_feat(index, shape)))
        _, _, y_hat, _ = net.forward_four_part_prior(
            y, params, *prior, y_spatial_prior_reduction=net.y_spatial_prior_reduction)
        return net.vqgan.generator(net.dec(y_hat, q_dec))

    enc, dec = [], []
    with torch.no_grad():
        for i in range(warmup + repeats):
            t0 = time.perf_counter()
            index, shape, y, _ = compress()
            t1 = time.perf_counter()
            decompress(index, shape, y)
            t2 = time.perf_counter()
            if i >= warmup:
                enc.append((t1 - t0) * 1e3)
                dec.append((t2 - t1) * 1e3)
    return {"enc": enc, "dec": dec, "params_m": sum(p.numel() for p in net.parameters()) / 1e6,
            "note": "the authors' inference code, default random init (seed 0), fp32; "
                    "no entropy coder in it (bits estimated), so no file size"}


class SplitClock:
    """Wraps the authors' Huffman/binary coder and notes when decoding starts: the moment
    `CGIC.compress` turns from encoding to decoding."""

    def __init__(self, coder: Any, clock: dict[str, float]) -> None:
        self.coder, self.clock = coder, clock

    def compress(self, *args: Any) -> Any:
        return self.coder.compress(*args)

    def decompress_string(self, *args: Any) -> Any:
        self.clock.setdefault("split", time.perf_counter())
        return self.coder.decompress_string(*args)


def controlgic_runs(checkout: Path, x: Any, warmup: int, repeats: int) -> dict[str, Any]:
    """Time CGIC.compress, split at its first read-back (module docstring)."""
    import torch
    import yaml

    torch.nn.Module.cuda = lambda self, device=None: self  # CPU patch (module docstring)
    sys.path.insert(0, str(checkout))
    from CGIC.models.model import CGIC  # the authors' modules
    from CGIC.tools.indices_coding import HuffmanCoding
    from CGIC.tools.mask_coding import BinaryCoding

    params = yaml.safe_load((checkout / "configs/config_inference.yaml").read_text())
    params = {k: v for k, v in params["model"]["params"].items()
              if k not in ("lossconfig", "ckpt_path")}
    torch.manual_seed(0)
    model = CGIC(**params).eval()
    counter = model.quantize.embedding_counter
    with torch.no_grad():
        for count in counter.values():
            count.fill_(1)
    h, w = x.shape[-2:]
    top, left = (h % 16) // 2, (w % 16) // 2  # torchvision center_crop to multiples of 16
    x = x[..., top:top + h - h % 16, left:left + w - w % 16]
    clock: dict[str, float] = {}
    coders = (SplitClock(HuffmanCoding(counter), clock), SplitClock(BinaryCoding(), clock))
    enc, dec = [], []
    with torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
        for i in range(warmup + repeats):
            clock.clear()
            t0 = time.perf_counter()
            model.compress(x, tmp, *coders, False)
            t2 = time.perf_counter()
            if i >= warmup:
                enc.append((clock["split"] - t0) * 1e3)
                dec.append((t2 - clock["split"]) * 1e3)
            for name in os.listdir(tmp):  # each run writes its own files
                os.remove(os.path.join(tmp, name))
    return {"enc": enc, "dec": dec,
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "note": "the authors' inference code (CGIC.compress: encode, Huffman to files, "
                    "read back, decode), default random init (seed 0), fp32"}


RUNNERS = {"glc": glc_runs, "controlgic": controlgic_runs}


def own_peak_rss_mb() -> float:
    """Peak RSS of this process's own address space (Linux `VmHWM`). Not `ru_maxrss`: Linux
    carries the parent's peak into a child across fork and exec, so the child would report
    at least gicl's own peak."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10  # kB
    from gicl.benchmarks.codec import peak_rss_mb

    return peak_rss_mb()


def main(argv: list[str]) -> int:
    import torch

    kind, checkout, input_path, warmup, repeats, threads = argv
    checkout_path = Path(checkout)
    check_checkout(kind, checkout_path)
    torch.set_num_threads(int(threads))
    x = torch.load(input_path, weights_only=True)
    result = RUNNERS[kind](checkout_path, x, int(warmup), int(repeats))
    result["peak_rss_mb"] = own_peak_rss_mb()  # the authors' model alone
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
