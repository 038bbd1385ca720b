"""The LPIPS variants a recipe can choose (`loss.lpips`), without importing torch: the
recipe validator reads them on the `--print-config` path."""

BACKBONE_FILES = {  # torchvision backbone weights lpips loads, by LPIPS network
    "vgg": ("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth"),
    "alex": ("alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
}

# What LPIPS sees for an image x in [0, 1]: an affine map (scale, offset).
LPIPS_INPUTS = {
    # LPIPS's own convention: images in [−1, 1]
    "standard": (2.0, -1.0),
    # the official Control-GIC loss (lianqi1008/Control-GIC, vqperceptual.py) calls LPIPS with
    # `normalize=True` (x ↦ 2x − 1, meant for [0, 1] data) on data its loader already put in
    # [−1, 1]: LPIPS sees 2(2x − 1) − 1 = 4x − 3, in [−3, 1]
    "official_cgic": (4.0, -3.0),
}
LPIPS_NETS = tuple(BACKBONE_FILES)
