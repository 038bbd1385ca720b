"""Command-line arguments shared by the commands and the benchmarks (below both layers:
`gicl.commands` imports `gicl.benchmarks`, never the other way). Imports no torch."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from gicl.errors import UserError


def add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    """--recipe/--profile/--set, shared by every command that resolves a recipe."""
    p.add_argument("--recipe", required=True, help="recipe name (recipes/NAME.yaml) or path")
    p.add_argument("--profile", default="paper", help="paper (default), smoke, demo, ...")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any recipe key, e.g. --set stages.pretrain.max_steps=100")


def parse_size(text: str) -> tuple[int, int]:
    """'768x512' → (height 512, width 768): WIDTHxHEIGHT, as image tools print sizes."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--size expects WIDTHxHEIGHT such as 768x512, got '{text}'") from None
    if w < 1 or h < 1:
        raise UserError(f"--size must be positive, got '{text}'")
    return h, w


def parse_points(text: str, flag: str, one: bool = False, example: dict[str, Any] | None = None,
                 validate: Callable[[Any], dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Operating points from JSON: an object, or (unless `one`) a non-empty list of them,
    each checked by `validate` (a codec's `validate_point`) when given."""
    hint = f"; e.g. {flag} '{json.dumps(example)}'" if example is not None else ""
    try:
        value = json.loads(text)
    except ValueError:
        raise UserError(f"{flag} {text!r} is not valid JSON{hint}") from None
    points = [value] if isinstance(value, dict) else value
    if one and not isinstance(value, dict):
        raise UserError(f"{flag} must be a JSON object, got {text!r}{hint}")
    if not isinstance(points, list) or not points or not all(isinstance(p, dict) for p in points):
        raise UserError(f"{flag} must be a JSON object or a list of them, got {text!r}{hint}")
    try:
        return [validate(p) for p in points] if validate is not None else points
    except UserError as e:
        raise UserError(f"{flag}: {e}") from None
