"""The model-file schema (version 2, reads version 1) and `init` across key prefixes."""

import pytest
import torch

from gicl.codecs.base import build_codec
from gicl.errors import UserError
from gicl.model_file import (
    MODEL_VERSION,
    fingerprint,
    load_codec_weights,
    read_model_file,
    save_model_file,
)
from gicl.recipes import resolve


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    return build_codec(resolve("vqgan", "smoke")["codec"])


def test_version_1_files_read_as_version_2_with_their_fingerprint(tmp_path, codec):
    state = {k: v.detach().clone() for k, v in codec.state_dict().items()}
    old = {"format": "gicl-model", "version": 1, "codec": codec.config, "state_dict": state,
           "fingerprint": fingerprint(codec.config, state), "meta": {"recipe": "vqgan"}}
    torch.save(old, tmp_path / "v1.pt")
    payload = read_model_file(tmp_path / "v1.pt")
    assert payload["version"] == MODEL_VERSION == 2
    assert payload["flags"] == {} and "ema_state_dict" not in payload
    assert payload["precision"] == "float32"
    new_print = save_model_file(codec, tmp_path / "v2.pt", {"recipe": "vqgan"})
    assert new_print == old["fingerprint"]  # same weights, no flags: same model identity
    assert fingerprint(codec.config, state, {"x": 1}) != old["fingerprint"]


def test_version_2_files_with_the_old_ema_field_read_with_their_fingerprint(tmp_path, codec):
    """Files written before EMA training carry `ema_state_dict: None`; new files drop it."""
    fp = save_model_file(codec, tmp_path / "new.pt")
    new = torch.load(tmp_path / "new.pt", weights_only=True)
    assert "ema_state_dict" not in new
    torch.save({**new, "ema_state_dict": None}, tmp_path / "old.pt")
    old = read_model_file(tmp_path / "old.pt")
    assert "ema_state_dict" not in old
    assert old["fingerprint"] == fingerprint(old["codec"], old["state_dict"], old["flags"]) == fp
    assert old["state_dict"].keys() == new["state_dict"].keys()


def test_other_versions_are_one_clear_error(tmp_path, codec):
    torch.save({"format": "gicl-model", "version": 3}, tmp_path / "v3.pt")
    with pytest.raises(UserError, match="version 3; this gicl reads versions 1, 2"):
        read_model_file(tmp_path / "v3.pt")


def test_init_map_renames_prefixes_and_strict_refuses_leftovers(tmp_path, codec, caplog):
    save_model_file(codec, tmp_path / "m.pt")
    target = build_codec(resolve("vqgan", "smoke")["codec"])
    caplog.set_level("INFO", logger="gicl")
    load_codec_weights(target, tmp_path / "m.pt", {"decoder.": "decoder."})
    assert all(torch.equal(v, codec.state_dict()[k]) for k, v in target.state_dict().items()
               if k.startswith("decoder."))
    assert not torch.equal(target.encoder.conv_in.weight, codec.encoder.conv_in.weight)
    assert "start fresh" in caplog.text and "unused" in caplog.text
    with pytest.raises(UserError, match=r"\(strict\): \d+ .*codec tensors have no stored value"):
        load_codec_weights(target, tmp_path / "m.pt", {"decoder.": "decoder."}, strict=True)
