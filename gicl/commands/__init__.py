"""One module per CLI subcommand; each defines `register(subparsers)`.

Helpers shared by several commands live here (pkgutil lists only the submodules)."""

from __future__ import annotations

from gicl.errors import UserError


def parse_size(text: str) -> tuple[int, int]:
    """'768x512' → (height 512, width 768): WIDTHxHEIGHT, as image tools print sizes."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--size expects WIDTHxHEIGHT such as 768x512, got '{text}'") from None
    if w < 1 or h < 1:
        raise UserError(f"--size must be positive, got '{text}'")
    return h, w
