"""One quantisation vocabulary for every exporter: none | fp16 | int8 | int4; fp32 is another name for none."""
from __future__ import annotations

import argparse

NAMES = ("none", "fp16", "int8", "int4")  # the manifest's `quantization` values (edgeemb.bundle.QUANTIZATIONS)
ALIASES = {"fp32": "none"}


def canonical(name: str) -> str:
    """The vocabulary's name for a quantisation (fp32 -> none); unknown names pass through to be refused."""
    return ALIASES.get(name, name)


def add_quantize_option(parser: argparse.ArgumentParser, supported: tuple[str, ...], default: str,
                        help: str) -> None:
    """`--quantize` with the exporter's subset of the vocabulary, fp32 accepted for none."""
    assert set(supported) <= set(NAMES), supported
    shown = "|".join(supported) + (" (fp32 = none)" if "none" in supported else "")
    parser.add_argument("--quantize", type=canonical, choices=supported, default=default, metavar=shown,
                        help=f"{help} [{shown}; default {default}]")
