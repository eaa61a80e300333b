"""One quantisation vocabulary on every export command: none | fp16 | int8 | int4, fp32 another name for none."""
import json

import pytest

pytest.importorskip("edgeemb_export.common.quantization")
from edgeemb.bundle import QUANTIZATIONS  # noqa: E402
from edgeemb.cli.main import build_parser  # noqa: E402
from edgeemb_export.common.quantization import NAMES, canonical  # noqa: E402


def test_the_vocabulary_is_the_manifests():
    assert NAMES == QUANTIZATIONS and canonical("fp32") == "none" and canonical("int8") == "int8"


@pytest.mark.parametrize("argv, expected", [
    (["export", "sentence", "src", "-o", "o", "--quantize", "fp32"], "none"),
    (["export", "sentence", "src", "-o", "o", "--quantize", "int4"], "int4"),
    (["export", "static", "v.vec", "-o", "o", "--quantize", "fp32"], "none"),
    (["export", "static", "v.vec", "-o", "o", "--quantize", "none"], "none"),
    (["distill", "src", "-o", "o", "--quantize", "fp16"], "fp16"),
    (["export", "llm", "src", "-o", "o", "--quantize", "fp32"], "none"),
])
def test_every_command_takes_the_shared_names(argv, expected):
    assert build_parser(argv[0]).parse_args(argv).quantize == expected


def test_a_name_outside_a_commands_subset_is_refused(capsys):
    with pytest.raises(SystemExit):
        build_parser("export").parse_args(["export", "static", "v.vec", "-o", "o", "--quantize", "int4"])
    assert "invalid choice: 'int4'" in capsys.readouterr().err


def test_static_export_writes_none_for_fp32_and_none(tmp_path):
    from edgeemb.cli.main import main

    vec = tmp_path / "t.vec"
    vec.write_text("2 3\nking 1 0 0\nqueen 0.9 0.1 0\n")
    for q in ("fp32", "none"):
        assert main(["export", "static", str(vec), "-o", str(tmp_path / q), "--quantize", q]) == 0
        assert json.loads((tmp_path / q / "edgeemb.json").read_text())["quantization"] == "none"
