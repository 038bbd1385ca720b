"""Importing the authors' Control-GIC checkpoint: safe reading, the name table, the EMA flag,
bad checkpoints, and the behaviour options an imported model carries (each switchable)."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from conftest import run_cli
from controlgic_weights import official_shapes

from gicl.codecs import build_codec
from gicl.codecs.controlgic import OFFICIAL_BEHAVIOUR
from gicl.codecs.routing import route
from gicl.entropy.huffman import HuffmanCode
from gicl.errors import UserError
from gicl.importers.controlgic import OFFICIAL_CONFIG, TABLE, ema_name, map_state, official_name
from gicl.info import model_file_config
from gicl.loading import Inert, read_foreign_checkpoint
from gicl.model_file import save_model_file

TINY = {
    "name": "controlgic", "ch": 32, "ch_mult": [1, 1, 1, 1, 1], "num_res_blocks": 1,
    "n_embed": 64, "resolution": 64, "attn_resolutions": [8], **OFFICIAL_BEHAVIOUR,
}


class Payload:
    """Unpickling this with plain pickle creates the file named in `path`."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_reduce_payload_never_runs(tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "hyper_parameters": Payload(str(marker))}, path)
    ckpt = read_foreign_checkpoint(path)
    assert not marker.exists()
    assert isinstance(ckpt["hyper_parameters"], Inert)
    assert ckpt["hyper_parameters"].qualname in ("posix.system", "nt.system")
    assert torch.equal(ckpt["state_dict"]["w"], torch.ones(2))
    # the CLI reads it the same way and names what is missing, in one line, exit 2
    r = run_cli("import", "controlgic", str(path), str(tmp_path / "out.pt"))
    assert r.returncode == 2 and not marker.exists()
    assert r.stderr.count("\n") == 1 and "is not a Control-GIC checkpoint" in r.stderr, r.stderr
    assert "quantize.embedding_counter" in r.stderr and not (tmp_path / "out.pt").exists()
    # and the payload is real: plain unpickling runs it
    pickle.loads(pickle.dumps(Payload(str(marker))))
    assert marker.exists()


def test_legacy_torch_format_is_read_the_same_way(tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": {"w": torch.arange(3.0)}, "cfg": Payload(str(marker))}, path,
               _use_new_zipfile_serialization=False)
    ckpt = read_foreign_checkpoint(path)
    assert not marker.exists() and isinstance(ckpt["cfg"], Inert)
    assert torch.equal(ckpt["state_dict"]["w"], torch.arange(3.0))


def test_checkpoint_of_another_model_is_one_line(tmp_path):
    with torch.device("meta"):
        other = build_codec({"name": "vqgan"}).state_dict()
    path = tmp_path / "vqgan.ckpt"
    torch.save({"state_dict": {f"model.{k}": torch.zeros(1) for k in list(other)[:20]}}, path)
    r = run_cli("import", "controlgic", str(path), str(tmp_path / "out.pt"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "656 of 656 tensors missing, e.g. quantize.embedding_counter.<k>" in r.stderr


def _meta_official() -> dict[str, torch.Tensor]:
    """The official state dict as shapes only (meta tensors), counters real."""
    state = {}
    for name, shape in official_shapes().items():
        if ".embedding_counter." in name:
            state[name] = torch.full(shape, 3.0)
        else:
            state[name] = torch.empty(shape, device="meta")
    return state


@pytest.mark.parametrize("ema", [False, True])
def test_name_table_and_ema_flag(ema):
    state = _meta_official()
    with torch.device("meta"):
        expected = {k: v.shape for k, v in build_codec(OFFICIAL_CONFIG).state_dict().items()}
    mapped, unused = map_state(state, expected, ema=ema, path="x")
    assert set(mapped) == set(expected)
    # the naming trap: official un-suffixed encoder mid and decoder conv_in are the medium branch
    assert official_name("encoder.mid_medium.attn_1.q.weight") == "encoder.mid.attn_1.q.weight"
    assert official_name("encoder.mid.attn_1.q.weight") == "encoder.mid_coarse.attn_1.q.weight"
    assert official_name("decoder.conv_in_medium.weight") == "decoder.conv_in.weight"
    assert official_name("decoder.mid.block_1.norm1.norm.norm.weight") == \
        "decoder.mid_coarse.block_1.norm1.norm_layer.weight"
    for name, tensor in mapped.items():
        if name != TABLE:
            source = ema_name(official_name(name)) if ema else official_name(name)
            assert tensor is state[source], name
    assert torch.equal(mapped[TABLE], torch.full((1024,), 3, dtype=torch.int64))
    if ema:
        assert unused["encoder.down"] > 0 and "ema_encoder" in unused and unused["ema_encoder"] == 2
    else:
        assert unused == {"ema_encoder": 206, "ema_decoder": 448, "ema_quantize": 3,
                          "ema_quant_conv": 4, "ema_post_quant_conv": 4}


def test_shape_mismatch_is_a_user_error():
    state = _meta_official()
    state["decoder.conv_in.weight"] = torch.empty(256, 4, 3, 3, device="meta")
    with torch.device("meta"):
        expected = {k: v.shape for k, v in build_codec(OFFICIAL_CONFIG).state_dict().items()}
    with pytest.raises(UserError, match="decoder.conv_in.weight has shape"):
        map_state(state, expected, ema=False, path="x")


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    torch.manual_seed(0)
    codec = build_codec(TINY).eval()
    codec.index_frequencies.copy_(torch.arange(64) % 7 * 100 + 1)
    path = tmp_path_factory.mktemp("tiny") / "tiny.pt"
    save_model_file(codec, path)
    return path


SWITCHES = {  # --set codec.KEY=VALUE, back to gicl's own choice
    "input_range": "[-1, 1]", "router": "exact", "decoder_branches": "own",
    "attention_window": "4", "entropy_coder": "huffman",
}


@pytest.mark.parametrize("key", sorted(SWITCHES))
def test_each_behaviour_switch_changes_the_output(tiny_file, kodak, key):
    from PIL import Image

    img = Image.open(kodak / "kodim23.png").convert("RGB").crop((256, 128, 320, 192))
    x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)[None].float() / 255
    base = model_file_config(str(tiny_file), [])["codec"]
    switched = model_file_config(str(tiny_file), [f"codec.{key}={SWITCHES[key]}"])["codec"]
    assert base[key] != switched[key]
    state = torch.load(tiny_file, weights_only=True)["state_dict"]
    outs = []
    for config in (base, switched):
        codec = build_codec(config).eval()
        codec.load_state_dict(state)
        with torch.no_grad():
            if key == "entropy_coder":  # the same symbols, other bits
                enc = codec.compress(x, {"ratios": [0.5, 0.4, 0.1]})
                outs.append(enc.sections[1:])
                assert torch.equal(codec.decompress(enc), codec(x, {"ratios": [0.5, 0.4, 0.1]}).x_hat)
            else:
                outs.append(codec(x, {"ratios": [0.5, 0.4, 0.1]}).x_hat)
    if key == "entropy_coder":
        assert outs[0] != outs[1]
    else:
        assert not torch.equal(outs[0], outs[1])


def test_vq_distance_switch_changes_indices():
    """|z|² + |e|² − 2z·e (official) vs |e|² − 2z·e: with a large |z|² the official distance
    cannot resolve two codewords that the reduced one tells apart."""
    base = build_codec(TINY)
    switched = build_codec({**TINY, "vq_distance": "reduced"})
    codebook = torch.zeros(64, 4)
    codebook[0] = torch.tensor([1e-4, 1e-3, 0.0, 0.0])
    codebook[1] = torch.tensor([1e-4, 0.0, 0.0, 0.0])
    codebook[2:] = -50.0
    z = torch.tensor([1000.0, 0.0, 0.0, 0.0]).view(1, 4, 1, 1)
    for codec in (base, switched):
        codec.quantizer.embedding.weight.data.copy_(codebook)
    assert int(base.quantizer.indices(z)) == 0  # a tie in float32: the first codeword
    assert int(switched.quantizer.indices(z)) == 1  # the truly nearest


def test_official_router_selects_k_minus_one():
    g = torch.Generator().manual_seed(0)
    e16, e8 = torch.rand(2, 16, 16, generator=g), torch.rand(2, 32, 32, generator=g)
    official = route(e8, e16, (0.5, 0.4, 0.1), rule="official")
    exact = route(e8, e16, (0.5, 0.4, 0.1), rule="exact")
    assert official.coarse.flatten(1).sum(1).tolist() == [25, 25]
    assert exact.coarse.flatten(1).sum(1).tolist() == [26, 26]
    # coarse + medium cover round(4·256·0.1 + 1024·0.4) − 1 = 511 cells
    assert (4 * official.coarse.flatten(1).sum(1) + official.medium.flatten(1).sum(1)).tolist() == [511, 511]
    for b in range(2):  # per image: the first image routes as if alone
        alone = route(e8[b : b + 1], e16[b : b + 1], (0.5, 0.4, 0.1), rule="official")
        assert torch.equal(alone.fine, official.fine[b : b + 1])
    one = route(e8, e16, (0.0, 0.0, 1.0), rule="official")  # mode 4: everything coarse
    assert bool(one.coarse.all()) and not bool(one.fine.any())
    two = route(e8, e16, (0.6, 0.4, 0.0), rule="official")  # mode 1: no coarse
    assert not bool(two.coarse.any()) and two.medium.flatten(1).sum(1).tolist() == [409, 409]


def test_official_huffman_tree_decodes():
    counts = np.arange(1024) % 13 * 50 + np.arange(1024) % 3  # many ties, zeros included
    code = HuffmanCode.from_counts_official(counts)
    canonical = HuffmanCode.from_counts(counts)
    assert not np.array_equal(code.codes, canonical.codes)  # the tree's codes, not canonical
    symbols = np.random.default_rng(0).integers(0, 1024, 5000)
    assert np.array_equal(code.decode(code.encode(symbols), len(symbols)), symbols)


def test_info_lists_behaviour_and_set_switches_it(tiny_file):
    r = run_cli("info", "--recipe", str(tiny_file), "--size", "64x64")
    assert r.returncode == 0, r.stderr
    assert 'behaviour router               "official"' in r.stdout, r.stdout
    r = run_cli("info", "--recipe", str(tiny_file), "--size", "64x64", "--set", "codec.router=exact",
                "--set", "codec.input_range=[-1, 1]")
    assert r.returncode == 0, r.stderr
    assert 'behaviour router               "exact"' in r.stdout
    assert "behaviour input_range          [-1.0, 1.0]" in r.stdout
    r = run_cli("info", "--recipe", str(tiny_file), "--set", "codec.router=k-1")
    assert r.returncode == 2 and "codec.router must be one of exact, official" in r.stderr, r.stderr
