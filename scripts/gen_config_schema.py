#!/usr/bin/env python3
"""Regenerate (or check) the config JSON Schema snapshot in schemas/config/.

The snapshot is named after the release line in VERSION with the patch set to 0
(v0.2.x → v0.2.0.json). ``--check`` exits 1 when the snapshot is out of date.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from tokn_router.accounts import schema  # noqa: E402


def snapshot_path() -> Path:
    version = (ROOT / "VERSION").read_text(encoding="utf-8").strip()
    major, minor, *_ = version.lstrip("v").split(".")
    return ROOT / "schemas" / "config" / f"v{major}.{minor}.0.json"


def render() -> str:
    return json.dumps(schema.json_schema(), indent=2, sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the snapshot is stale")
    args = parser.parse_args()
    path = snapshot_path()
    text = render()
    if args.check:
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            print(f"{path.relative_to(ROOT)} is out of date; run scripts/gen_config_schema.py")
            return 1
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
