"""Metric names, importable without torch (the CLI's `--help` must stay fast)."""

PER_IMAGE = ("psnr", "ms-ssim", "lpips-vgg", "lpips-alex", "dists")
PER_DATASET = ("fid", "kid")
METRICS = PER_IMAGE + PER_DATASET
LOWER_IS_BETTER = frozenset({"lpips-vgg", "lpips-alex", "dists", "fid", "kid"})
