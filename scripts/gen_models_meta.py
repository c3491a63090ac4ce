#!/usr/bin/env python3
"""Generate ``src/tokn_router/data/models_meta.json`` from the models.dev TOML data.

Usage::

    python scripts/gen_models_meta.py [SOURCE] [--output PATH] [--check]

``SOURCE`` defaults to ``../shared/data/models-dev`` relative to the repository root.
``--check`` writes nothing and exits 1 when the packaged file is out of date.

Inheritance follows the data folder's README exactly:

* the model id is the file name (``models/<id>.toml``);
* ``base_model = "<provider>/<model>"`` inherits every field of
  ``base/<provider>/<model>.toml`` and the model file's own fields win;
* a nested table the model file sets (``[cost]``, ``[limit]``, ``[modalities]``)
  replaces the inherited table whole (no deep merge);
* ``base_model_omit = ["limit.input"]`` removes dot-path fields after the merge.

Some model files are git symlinks checked out as plain text (the file holds only a
relative path such as ``../../zai/models/glm-4.7.toml``); they are followed. A link
whose target is absent from the data is skipped with a warning.

Output: ``{provider_id: {model_id: {"name", "capabilities", "cost", "limit"}}}``, compact
JSON with sorted keys. ``capabilities`` holds every remaining model field except the
bulky or request-plumbing ones in ``DROPPED_FIELDS``. Empty sections are left out.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO_ROOT.parent / "shared" / "data" / "models-dev"
DEFAULT_OUTPUT = REPO_ROOT / "src" / "tokn_router" / "data" / "models_meta.json"

PROVIDERS: tuple[str, ...] = (
    "github-copilot",
    "zai-coding-plan",
    "zai",
    "zhipuai-coding-plan",
    "zhipuai",
)

# Sections lifted out of the model record; everything else goes under "capabilities".
SECTIONS: tuple[str, ...] = ("cost", "limit")
# Parse-time inheritance keys (never part of a resolved model).
INHERITANCE_FIELDS = frozenset({"base_model", "base_model_omit"})
# Not useful to an API client and large: leaderboard scores, weight download links,
# per-model SDK plumbing (``provider``) and experimental request modes.
DROPPED_FIELDS = frozenset({"benchmarks", "weights", "provider", "experimental"})

_MAX_LINK_HOPS = 8

Model = dict[str, Any]


class DataError(Exception):
    """The models.dev data cannot be resolved (missing base model, link loop, ...)."""


class DanglingLinkError(DataError):
    """A text symlink points at a file that is not part of the data."""


def _link_target(text: str) -> str | None:
    """The relative path a checked-out-as-text git symlink holds, else None."""
    candidate = text.strip()
    if (
        candidate
        and "\n" not in candidate
        and "=" not in candidate
        and candidate.endswith(".toml")
        and not candidate.startswith("#")
    ):
        return candidate
    return None


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file, following real symlinks and text symlinks."""
    current = path
    for _ in range(_MAX_LINK_HOPS):
        if not current.is_file():
            if current == path:
                raise DataError(f"{path}: no such file")
            raise DanglingLinkError(f"{path}: link target {current} does not exist")
        text = current.read_text(encoding="utf-8")
        target = _link_target(text)
        if target is None:
            try:
                return tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise DataError(f"{current}: {exc}") from exc
        current = (current.parent / target).resolve()
    raise DataError(f"{path}: more than {_MAX_LINK_HOPS} link hops")


def _omit(model: Model, dotted: str) -> None:
    """Remove ``dotted`` (e.g. ``limit.input``) from ``model`` if present."""
    *parents, leaf = dotted.split(".")
    node: Any = model
    for key in parents:
        node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(leaf, None)


def resolve_model(source: Path, raw: dict[str, Any], where: str = "") -> Model:
    """Apply ``base_model`` / ``base_model_omit`` to one parsed model file."""
    model: Model = {k: v for k, v in raw.items() if k not in INHERITANCE_FIELDS}
    base_ref = raw.get("base_model")
    if base_ref is not None:
        if not isinstance(base_ref, str) or base_ref.count("/") != 1:
            raise DataError(f"{where}: base_model must be '<provider>/<model>', got {base_ref!r}")
        base_path = source / "base" / f"{base_ref}.toml"
        if not base_path.is_file():
            raise DataError(f"{where}: base_model {base_ref!r} not found at {base_path}")
        base = read_toml(base_path)
        if INHERITANCE_FIELDS & base.keys():
            raise DataError(f"{base_path}: a base model cannot itself inherit")
        # Shallow merge: the model's own keys win, so a table it sets replaces the
        # inherited one whole.
        model = {**base, **model}
    omit = raw.get("base_model_omit", [])
    if not isinstance(omit, list) or not all(isinstance(p, str) for p in omit):
        raise DataError(f"{where}: base_model_omit must be a list of dot paths")
    for dotted in omit:
        _omit(model, dotted)
    return model


def compact(model: Model) -> Model:
    """Shape a resolved model for the packaged file."""
    out: Model = {}
    if "name" in model:
        out["name"] = model["name"]
    for section in SECTIONS:
        value = model.get(section)
        if isinstance(value, dict) and value:
            out[section] = value
    capabilities = {
        k: v
        for k, v in model.items()
        if k != "name" and k not in SECTIONS and k not in DROPPED_FIELDS
    }
    if capabilities:
        out["capabilities"] = capabilities
    return out


def _warn(message: str) -> None:
    print(f"gen_models_meta: warning: {message}", file=sys.stderr)


def build(source: Path, providers: Iterable[str] | None = None) -> dict[str, dict[str, Model]]:
    """Resolve every model of ``providers`` (default: ``PROVIDERS``) under ``source``."""
    result: dict[str, dict[str, Model]] = {}
    for provider_id in PROVIDERS if providers is None else providers:
        models_dir = source / provider_id / "models"
        if not models_dir.is_dir():
            raise DataError(f"{models_dir}: provider {provider_id!r} has no models folder")
        table: dict[str, Model] = {}
        for path in sorted(models_dir.glob("*.toml")):
            where = f"{provider_id}/{path.stem}"
            try:
                raw = read_toml(path)
            except DanglingLinkError as exc:
                _warn(f"skipping {where}: {exc}")
                continue
            table[path.stem] = compact(resolve_model(source, raw, where))
        result[provider_id] = table
    return result


def render(data: dict[str, dict[str, Model]]) -> str:
    """Deterministic compact JSON (sorted keys, no whitespace, trailing newline)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "source",
        nargs="?",
        type=Path,
        default=DEFAULT_SOURCE,
        help=f"models.dev data folder (default: {DEFAULT_SOURCE})",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON file to write")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the output file is not up to date"
    )
    args = parser.parse_args(argv)
    source: Path = args.source
    output: Path = args.output
    if not source.is_dir():
        parser.error(f"source folder not found: {source}")
    try:
        text = render(build(source))
    except DataError as exc:
        print(f"gen_models_meta: error: {exc}", file=sys.stderr)
        return 2
    current = output.read_text(encoding="utf-8") if output.is_file() else None
    if args.check:
        if current != text:
            print(f"gen_models_meta: {output} is out of date; re-run the script", file=sys.stderr)
            return 1
        return 0
    if current != text:
        output.write_text(text, encoding="utf-8")
    n = sum(len(t) for t in json.loads(text).values())
    print(f"gen_models_meta: {n} models, {len(text)} bytes -> {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
