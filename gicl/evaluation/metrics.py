"""Image-quality metrics of the papers' evaluation protocol, all computed by their libraries.

- psnr: RGB, 8-bit, one MSE over all pixels and channels of the saved uint8 images.
- ms-ssim: torchmetrics `multiscale_structural_similarity_index_measure` (data range 1,
  defaults: 5 scales, Gaussian 11/1.5), on the uint8 images scaled to [0, 1].
- lpips-vgg / lpips-alex: the `lpips` package (v0.1), inputs in [-1, 1].
- dists: `DISTS_pytorch` (Ding et al.'s reference port) at full resolution (no resize);
  its α/β file ships inside the package.
- fid / kid: torchmetrics with torch-fidelity's Inception (2048-d pool features), over
  256×256 patches of every image: the grid at offset 0 and the grid shifted by 128 px
  (HiFiC's protocol; Control-GIC A.1's 6 573 patches from DIV2K's 100 validation images,
  ≈ 66 per 2040×~1400 image, match it rather than one grid's ≈ 35). One Inception pass per
  patch feeds both metrics; KID uses subsets of min(1000, patches) (torchmetrics defaults
  otherwise: 100 subsets, cubic polynomial kernel).

Pretrained weights are never downloaded here: each backbone is loaded through its
library's own path (torchvision's / torch-fidelity's hub cache, i.e. `$TORCH_HOME/hub/
checkpoints`), and `check_weights` first raises a UserError naming the exact missing file
and directory, then has `gicl.loading` open each file as plain data and check its published
SHA-256 before the library (which unpickles with `weights_only=False`) sees it. A metric is
never computed with weights other than the files found there.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from importlib import resources

import torch
from torch import Tensor, nn

from gicl.errors import UserError
from gicl.evaluation.metric_names import METRICS, PER_DATASET, PER_IMAGE
from gicl.images import from_uint8
from gicl.loading import hub_checkpoints_dir, verify_hub_weights

PATCH = 256
MS_SSIM_MIN_SIDE = 160  # 5 scales of an 11-tap window: torchmetrics needs more than this


@dataclass(frozen=True)
class WeightsFile:
    name: str  # file name in the hub cache's checkpoints/ folder
    url: str
    what: str


def _torchvision_file(arch: str) -> WeightsFile:
    import torchvision.models as tvm

    url = {"vgg16": tvm.VGG16_Weights, "alexnet": tvm.AlexNet_Weights}[arch].IMAGENET1K_V1.url
    return WeightsFile(url.rsplit("/", 1)[1], url, f"torchvision's ImageNet {arch} weights")


def _inception_file() -> WeightsFile:
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    return WeightsFile(URL_INCEPTION_V3.rsplit("/", 1)[1], URL_INCEPTION_V3,
                       "torch-fidelity's FID Inception-v3 weights")


def weights_needed(metric: str) -> list[WeightsFile]:
    if metric in ("lpips-vgg", "dists"):
        return [_torchvision_file("vgg16")]
    if metric == "lpips-alex":
        return [_torchvision_file("alexnet")]
    if metric in PER_DATASET:
        return [_inception_file()]
    return []


def check_weights(metrics: list[str]) -> None:
    """UserError naming the first weights file a requested metric needs and cannot find, or
    that is not plain data or not the published file (`gicl.loading.verify_hub_weights`)."""
    folder = hub_checkpoints_dir()
    for metric in metrics:
        for f in weights_needed(metric):
            if not (folder / f.name).is_file():
                raise UserError(
                    f"metric {metric} needs {f.what}: place {f.name} in {folder} (from {f.url}; "
                    f"set $TORCH_HOME to use another cache) or leave {metric} out of --metrics")
            verify_hub_weights(folder / f.name, f.url)


def parse_metrics(text: str) -> list[str]:
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise UserError(f"unknown metric(s) {', '.join(unknown) or '(none given)'} in --metrics "
                        f"(known: {','.join(METRICS)})")
    return list(dict.fromkeys(names))


def check_sizes(metrics: list[str], sizes: list[tuple[int, int]]) -> None:
    """UserError before any work when the images are too small for a requested metric."""
    small = [hw for hw in sizes if min(hw) <= MS_SSIM_MIN_SIDE]
    if "ms-ssim" in metrics and small:
        raise UserError(f"ms-ssim needs images larger than {MS_SSIM_MIN_SIDE} px a side, got "
                        f"{small[0][0]}x{small[0][1]}: leave it out of --metrics")
    count = sum(len(patch_origins(h, w)) for h, w in sizes)
    wanted = [m for m in metrics if m in PER_DATASET]
    if wanted and count < 2:
        raise UserError(f"{'/'.join(wanted)} need at least 2 patches of {PATCH}x{PATCH}, the "
                        f"images give {count}: use more or larger images, or leave them out "
                        "of --metrics")


def psnr(ref: Tensor, rec: Tensor, peak: float = 255.0) -> float:
    """PSNR in dB of one image pair, one MSE over every pixel and channel (inf when
    identical): uint8 images with peak 255 here, [0, 1] tensors with peak 1 in training."""
    mse = (ref.double() - rec.double()).pow(2).mean()
    return float(10 * torch.log10(peak**2 / mse))


def _dists_model() -> nn.Module:
    from DISTS_pytorch import DISTS

    with warnings.catch_warnings():  # DISTS_pytorch asks torchvision with `pretrained=True`
        warnings.simplefilter("ignore")
        model = DISTS(load_weights=False)
    alpha_beta = resources.files("DISTS_pytorch") / "weights.pt"
    with resources.as_file(alpha_beta) as path:
        weights = torch.load(path, map_location="cpu", weights_only=True)
    model.alpha.data, model.beta.data = weights["alpha"], weights["beta"]
    return model


class PairMetrics:
    """Full-reference metrics of one reconstruction against its original, both uint8."""

    def __init__(self, names: list[str], device: str | torch.device) -> None:
        import lpips

        self.names = [n for n in names if n in PER_IMAGE]
        check_weights(self.names)
        self.device = torch.device(device)
        self.models: dict[str, nn.Module] = {}
        for name in self.names:
            if name.startswith("lpips-"):
                with warnings.catch_warnings():  # lpips asks torchvision with `pretrained=True`
                    warnings.simplefilter("ignore")
                    self.models[name] = lpips.LPIPS(net=name.split("-")[1], verbose=False)
            elif name == "dists":
                self.models[name] = _dists_model()
        for m in self.models.values():
            m.to(self.device).eval().requires_grad_(False)

    def __call__(self, ref: Tensor, rec: Tensor) -> dict[str, float]:
        from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

        out: dict[str, float] = {}
        x, y = from_uint8(ref).to(self.device), from_uint8(rec).to(self.device)
        with torch.no_grad():
            for name in self.names:
                if name == "psnr":
                    out[name] = psnr(ref, rec)
                elif name == "ms-ssim":
                    out[name] = float(multiscale_structural_similarity_index_measure(
                        y, x, data_range=1.0))
                elif name.startswith("lpips-"):
                    out[name] = float(self.models[name](y * 2 - 1, x * 2 - 1))
                else:
                    out[name] = float(self.models[name](x, y))
        return out


def patch_origins(h: int, w: int) -> list[tuple[int, int]]:
    """Top-left corners of the PATCH×PATCH grid at offset 0 and of the grid shifted by
    PATCH/2 in both directions (HiFiC); none when the image is smaller than a patch."""
    return [(top, left) for off in (0, PATCH // 2)
            for top in range(off, h - PATCH + 1, PATCH)
            for left in range(off, w - PATCH + 1, PATCH)]


def patches(pixels: Tensor) -> Tensor:
    """(H, W, 3) uint8 → (N, 3, PATCH, PATCH) uint8 at `patch_origins`."""
    img = pixels.permute(2, 0, 1)
    out = [img[:, t:t + PATCH, l:l + PATCH] for t, l in patch_origins(*img.shape[-2:])]
    return torch.stack(out) if out else torch.empty(0, 3, PATCH, PATCH, dtype=torch.uint8)


class _Precomputed(nn.Module):
    """Feature "extractor" for torchmetrics that passes through features computed once."""

    num_features = 2048

    def forward(self, features: Tensor) -> Tensor:
        return features


class PatchDistribution:
    """FID / KID between original and reconstructed patches; real features kept across
    operating points, fake ones reset after each `compute`."""

    def __init__(self, names: list[str], device: str | torch.device) -> None:
        from torchmetrics.image.fid import FrechetInceptionDistance, NoTrainInceptionV3
        from torchmetrics.image.kid import KernelInceptionDistance

        self.names = [n for n in names if n in PER_DATASET]
        check_weights(self.names)
        self.device = torch.device(device)
        self.inception = None
        self.fid = self.kid = None
        if not self.names:
            return
        with warnings.catch_warnings():  # KID warns that it keeps every feature in memory
            warnings.simplefilter("ignore")
            self.inception = NoTrainInceptionV3(name="inception-v3-compat",
                                                features_list=["2048"]).to(self.device)
            if "fid" in self.names:
                self.fid = FrechetInceptionDistance(_Precomputed(), reset_real_features=False)
            if "kid" in self.names:
                self.kid = KernelInceptionDistance(_Precomputed(), reset_real_features=False)
        for m in (self.fid, self.kid):
            if m is not None:
                m.to(self.device)
        self.count = {True: 0, False: 0}

    def add(self, pixels: Tensor, real: bool) -> None:
        if not self.names:
            return
        batch = patches(pixels)
        if not len(batch):
            return
        with torch.no_grad():
            features = torch.cat([self.inception(chunk.to(self.device)).double()
                                  for chunk in batch.split(32)])
        for m in (self.fid, self.kid):
            if m is not None:
                m.update(features, real=real)
        self.count[real] += len(batch)

    def compute(self) -> dict[str, float]:
        """FID, KID (mean and std over subsets); needs ≥ 2 patches (see `check_sizes`)."""
        if not self.names:
            return {}
        out: dict[str, float] = {}
        if self.fid is not None:
            out["fid"] = float(self.fid.compute())
            self.fid.reset()
        if self.kid is not None:
            self.kid.subset_size = min(1000, self.count[True], self.count[False])
            mean, std = self.kid.compute()
            out["kid"], out["kid_std"] = float(mean), float(std)
            self.kid.reset()
        self.count[False] = 0
        return out
