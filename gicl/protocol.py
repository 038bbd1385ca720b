"""The training protocol of a resolved recipe in words: what `--print-config` ends with and
what each stage logs when it starts.

The choices that change what an adversarial stage learns, and where papers and their code
disagree, are easy to miss in a long YAML: the crop, gradient clipping, precision, the scale
of the reconstruction terms, the LPIPS variant, the VQ-loss form and the weight EMA. Each
recipe states its reason for each in its `why:` section (which source it follows, or why
it departs from it); this module puts value and reason side by side. Torch-free.
"""

from __future__ import annotations

from typing import Any

# aspect → label; every recipe's `why:` gives a reason for each
ASPECTS = {
    "crop": "crop", "clipping": "clipping", "precision": "precision",
    "loss_scale": "loss scale", "lpips": "LPIPS", "vq_loss": "VQ loss", "ema": "EMA",
}


def _crop(config: dict[str, Any]) -> str:
    data = config["data"]
    return f"{data['transform']} to {data['crop']}² (validation: {data['val_crop'] or 'full size'})"


def _clipping(stage: dict[str, Any]) -> str:
    clip = stage["gradient_clip"]
    if not clip["max"]:
        return "none"
    return f"by {'global norm' if clip['algorithm'] == 'norm' else 'value (every element)'} at {clip['max']}"


def _precision(config: dict[str, Any], stage: dict[str, Any]) -> str:
    if stage["precision"]:
        return str(stage["precision"])
    chosen = config["trainer"]["precision"]
    return "auto: bf16-mixed on GPU, 32-true on CPU" if chosen == "auto" else f"{chosen} (trainer.precision)"


def _loss_scale(stage: dict[str, Any]) -> str:
    loss = stage.get("loss") or {}
    if "pixel_range" not in loss or not (loss.get("l1") or loss.get("mse")):
        return f"no pixel loss (module {stage['module']})"
    lo, hi = loss["pixel_range"]
    terms = " + ".join(f"{loss[k]}·{k.upper()}" for k in ("l1", "mse") if loss.get(k))
    return f"{terms} on images in [{lo:g}, {hi:g}]"


def _lpips(stage: dict[str, Any]) -> str:
    loss = stage.get("loss") or {}
    if "lpips" not in loss or not loss.get("perceptual") or stage["perceptual"] == "off":
        return "off"
    from gicl.losses.lpips_choices import LPIPS_INPUTS

    scale, offset = LPIPS_INPUTS[loss["lpips"]["input"]]
    return (f"{loss['perceptual']}·LPIPS-{loss['lpips']['net']}, input {loss['lpips']['input']} "
            f"(sees [{offset:g}, {scale + offset:g}]), weights {stage['perceptual']}")


def _vq_loss(codec: dict[str, Any], stage: dict[str, Any]) -> str:
    if "beta" not in codec and "legacy_vq" not in codec:
        return "the codec's default form"
    beta, legacy = codec.get("beta", 0.25), codec.get("legacy_vq", False)
    if beta == 1:
        form = "‖sg[z] − z_q‖² + ‖z − sg[z_q]‖² (β = 1 on both terms)"
    elif legacy:
        form = f"{beta}·‖sg[z] − z_q‖² + ‖z − sg[z_q]‖² (β on the codebook term: taming 'legacy')"
    else:
        form = f"‖sg[z] − z_q‖² + {beta}·‖z − sg[z_q]‖² (β on the commitment term)"
    weight = (stage.get("loss") or {}).get("codebook")
    return form if weight is None else f"{weight}·[{form}]"


def _ema(stage: dict[str, Any]) -> str:
    ema = stage.get("ema") or {}
    if not ema.get("decay"):
        return "off (raw weights validated and exported)"
    return (f"decay {ema['decay']} from iteration {ema.get('start', 0)}, every {ema.get('every', 1)} "
            "(EMA weights validated and exported)")


def stage_protocol(config: dict[str, Any], name: str) -> list[tuple[str, str, str]]:
    """(label, value, reason) for each aspect of stage `name`."""
    stage = config["stages"][name]
    codec = stage["codec"] or config["codec"]
    values = {
        "crop": _crop(config), "clipping": _clipping(stage), "precision": _precision(config, stage),
        "loss_scale": _loss_scale(stage), "lpips": _lpips(stage), "vq_loss": _vq_loss(codec, stage),
        "ema": _ema(stage),
    }
    why = config.get("why") or {}
    return [(label, values[key], why.get(key, "(the recipe gives no reason)"))
            for key, label in ASPECTS.items()]


def protocol_text(config: dict[str, Any], prefix: str = "# ") -> str:
    """Every stage's protocol, one aspect per line, as YAML comments by default."""
    lines = [f"{prefix}training protocol of recipe {config['name']} (profile {config['profile']})"]
    for name in config["stages"]:
        lines.append(f"{prefix}stage {name} ({config['stages'][name]['module']}):")
        for label, value, reason in stage_protocol(config, name):
            lines.append(f"{prefix}  {label + ':':<12}{value}")
            lines.append(f"{prefix}  {'':<12}why: {reason}")
    return "\n".join(lines) + "\n"
