"""The authors' inference code as a `gicl bench codec` peer, run in its own process.

`python -m gicl.peers.official glc CHECKOUT INPUT.pt WARMUP REPEATS THREADS` imports the
model from a checkout of jzyustc/GLC (its `src` package goes first on `sys.path`; its modules
keep their own imports and global state, hence the separate process), builds `GLC_Image` with
the default initialisation under seed 0 (the machine is offline; latency does not depend on
the weights), fp32, eval, `no_grad`, and prints one JSON line: the timed runs, the parameter
count and this process's peak RSS.

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
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from gicl.errors import UserError

LAYOUT = {"glc": ("src/models/image_model.py", "jzyustc/GLC", "official-glc")}


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


RUNNERS = {"glc": glc_runs}


def main(argv: list[str]) -> int:
    import torch

    from gicl.benchmarks.codec import peak_rss_mb

    kind, checkout, input_path, warmup, repeats, threads = argv
    checkout_path = Path(checkout)
    check_checkout(kind, checkout_path)
    torch.set_num_threads(int(threads))
    x = torch.load(input_path, weights_only=True)
    result = RUNNERS[kind](checkout_path, x, int(warmup), int(repeats))
    result["peak_rss_mb"] = peak_rss_mb()  # this process: the authors' model alone
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
