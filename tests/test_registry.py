"""gicl.registry: lazy built-ins, clear errors, constructor keywords read without importing."""

import subprocess
import sys

import pytest
from conftest import REPO

from gicl.errors import RecipeError
from gicl.registry import CODECS, Registry, _scan_codecs


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(RecipeError, match=r"unknown codec 'vqgam' in codec\.name \(known: .*progic.*vqgan"):
        CODECS.load("vqgam", "codec.name")


def test_naming_builtins_imports_no_torch_and_reads_constructor_keywords():
    code = ("import sys; from gicl.registry import CODECS, CALLBACKS; "
            "print(sorted(CODECS.keywords('progic'))[:3], sorted(CALLBACKS.keywords('frequency_table')), "
            "'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "['attention_blocks', 'beta', 'channels'] ['every_n', 'start'] False"


def test_lazy_entry_becomes_the_object_and_clashes_are_errors():
    reg = Registry("thing")
    reg.register("dumps", "json:dumps")
    import json

    assert reg.load("dumps") is json.dumps and reg.keywords("dumps") is None  # **kw
    reg.register("dumps", json.dumps)  # the same object registering itself: fine
    with pytest.raises(RecipeError, match="registered twice"):
        reg.register("dumps", json.loads)


def test_a_codec_module_with_only_the_decorator_is_found(tmp_path):
    (tmp_path / "newcodec.py").write_text(
        "from gicl.codecs.base import Codec, register_codec\n\n"
        "@register_codec\nclass New(Codec):\n    codec_id = 'new'\n\n"
        "class Plain(Codec):\n    codec_id = 'plain'\n")
    reg = Registry("codec")
    _scan_codecs(reg, [str(tmp_path)])
    assert reg.names() == ["new"] and reg._targets["new"] == "gicl.codecs.newcodec:New"
