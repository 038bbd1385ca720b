"""`gicl import glc`: the authors' checkpoint (official names, `module.` prefixed, wrapped as
their training script saves it) → a gicl model file holding only the inference codec, read
without running pickled code; `info` reports the inference codec and the training-only parts.

The round trip uses the official-size model with the equivalence fixture's weights
(`test_glc_fill.filled_glc`, ~10 s to fill), so the imported file is checked value by value
against the source and `compress`/`decompress` run on it in real subprocesses.
"""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from conftest import KODAK, run_cli
from test_glc_fill import TINY, filled_glc, filled_state_dict

from gicl.codecs import build_codec
from gicl.errors import UserError
from gicl.images import read_image, to_uint8, write_png
from gicl.importers.glc import import_checkpoint

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
TRAINING_ONLY = ("code_pred_loss.", "code_pred_pix_loss.", "vqgan.quantize.")


class Payload:
    """Unpickling this with plain pickle creates the file named in `path`."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_official_names_are_the_reference_names():
    """gicl's GLC with training parts has exactly the authors' 792 names and shapes."""
    with open(os.path.join(FIXTURES, "glc_official_state_dict.json")) as f:
        reference = {k: list(v) for k, v in json.load(f)["tensors"].items()}
    with torch.device("meta"):
        ours = {k: list(v.shape) for k, v in build_codec({"name": "glc"}).state_dict().items()}
    assert ours == reference


def test_official_checkpoint_imports_and_round_trips(tmp_path):
    _, weights = filled_glc()
    ckpt = tmp_path / "GLC_image.pth.tar"
    marker = tmp_path / "payload_ran"
    torch.save({"net": {f"module.{k}": v for k, v in weights.items()}, "epoch": 12,
                "args": Payload(str(marker))}, ckpt)
    out = tmp_path / "glc.pt"
    r = run_cli("import", "glc", str(ckpt), str(out))
    assert r.returncode == 0, r.stderr
    assert not marker.exists()
    assert "code_pred_loss 114, code_pred_pix_loss 114, vqgan.quantize 1" in r.stdout, r.stdout
    state = torch.load(out, weights_only=True)["state_dict"]
    inference = {k: v for k, v in weights.items() if not k.startswith(TRAINING_ONLY)}
    assert set(state) == set(inference)  # no training-only weights
    assert all(torch.equal(state[k], v) for k, v in inference.items())
    assert sum(v.numel() for v in state.values()) == 104_639_107


def test_imported_file_round_trips_through_compress_and_decompress(tmp_path):
    """A narrower GLC with the official names and the fixture's fill rules (the official size
    is imported above; compressing with it in two more processes would take minutes here)."""
    codec = build_codec(TINY).eval()
    weights = filled_state_dict(codec)
    codec.load_state_dict(weights)
    torch.save({"state_dict": {f"module.{k}": v for k, v in weights.items()}}, tmp_path / "c.pth")
    out = tmp_path / "tiny.pt"
    import_checkpoint(tmp_path / "c.pth", out, config=TINY)
    r = run_cli("info", "--recipe", str(out), "--json", "--size", "64x64")
    assert r.returncode == 0, r.stderr
    split = codec.parameter_split()
    assert json.loads(r.stdout)["parameter_split"] == {"inference": split["inference"],
                                                       "total": split["inference"]}
    image = tmp_path / "crop.png"
    write_png(image, to_uint8(read_image(KODAK / "kodim23.png")[..., 100:164, 200:264]))
    x = read_image(image)
    r = run_cli("compress", str(image), str(tmp_path / "x.gic"), "--ckpt", str(out),
                "--point", '{"quality": 2}', "--device", "cpu")
    assert r.returncode == 0, r.stderr
    r = run_cli("decompress", str(tmp_path / "x.gic"), str(tmp_path / "y.png"), "--ckpt", str(out),
                "--device", "cpu")
    assert r.returncode == 0, r.stderr
    with torch.no_grad():
        expected = to_uint8(codec.decompress(codec.compress(x, {"quality": 2})))
    assert torch.equal(to_uint8(read_image(tmp_path / "y.png")), expected)


def test_reduce_payload_never_runs_and_another_model_is_one_line(tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pth"
    with torch.device("meta"):
        other = build_codec({"name": "vqgan"}).state_dict()
    torch.save({"state_dict": {k: torch.zeros(1) for k in list(other)[:20]},
                "hyper_parameters": Payload(str(marker))}, path)
    r = run_cli("import", "glc", str(path), str(tmp_path / "out.pt"))
    assert r.returncode == 2 and not marker.exists()
    assert r.stderr.count("\n") == 1, r.stderr
    assert "is not a GLC checkpoint: 563 of 563 tensors missing, e.g. q_enc, q_dec, enc.enc_1" in r.stderr
    assert not (tmp_path / "out.pt").exists()
    pickle.loads(pickle.dumps(Payload(str(marker))))  # the payload is real
    assert marker.exists()
    r = run_cli("import", "glc", str(path), str(tmp_path / "out.pt"), "--ema")
    assert r.returncode == 2 and "--ema is for Control-GIC" in r.stderr


def test_code_predictors_kept_only_when_asked(tmp_path):
    """A narrower GLC with the official names (the official size is covered above)."""
    weights = filled_state_dict(build_codec(TINY))
    ckpt = tmp_path / "tiny.pth"
    torch.save({"state_dict": weights}, ckpt)
    for keep in (False, True):
        out = tmp_path / f"{keep}.pt"
        import_checkpoint(ckpt, out, with_code_predictors=keep, config=TINY)
        payload = torch.load(out, weights_only=True)
        assert payload["codec"]["training_parts"] is keep
        assert any(k.startswith(TRAINING_ONLY) for k in payload["state_dict"]) is keep
        assert all(torch.equal(payload["state_dict"][k], weights[k]) for k in payload["state_dict"])
    weights["q_enc"] = torch.ones(3, 64, 1, 1)
    torch.save(weights, ckpt)
    with pytest.raises(UserError, match=r"q_enc has shape \(3, 64, 1, 1\), the GLC architecture"):
        import_checkpoint(ckpt, tmp_path / "bad.pt", config=TINY)



def test_info_of_the_recipe_splits_inference_and_training_parts():
    r = run_cli("info", "--recipe", "glc", "--json", "--size", "64x64")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["parameter_split"] == {
        "inference": 104_639_107, "vqgan_codebook": 4_194_304, "code_predictors": 55_154_688,
        "total": 163_988_099}
