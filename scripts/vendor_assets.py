"""Copy the browser assets the service serves out of ``node_modules`` into ``app/static/vendor/``.

The service never loads anything from a CDN and needs no npm at run time: the files are committed. After changing
a version in ``package.json``::

    npm install            # updates package-lock.json and node_modules
    uv run python scripts/vendor_assets.py      # or: npm run vendor

writes ``app/static/vendor/<package>/`` with the files below and a ``VENDORED.json`` naming the version, the
lock file's integrity hash and each file's SHA-256. ``--check`` only compares and exits 1 on a difference
(tests/integration/test_front_door.py checks the same without npm).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "package-lock.json"
NODE_MODULES = ROOT / "node_modules"
VENDOR_DIR = ROOT / "app" / "static" / "vendor"
MANIFEST = "VENDORED.json"

# package -> the files of it the service serves (plus its licence texts, which Apache-2.0 asks us to pass on)
ASSETS: dict[str, tuple[str, ...]] = {
    "swagger-ui-dist": ("swagger-ui-bundle.js", "swagger-ui.css", "LICENSE", "NOTICE"),
    "chart.js": ("dist/chart.umd.min.js", "LICENSE.md"),  # the console's charts (app/console)
}


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def locked(package: str) -> dict[str, str]:
    """The lock file's entry of ``package`` (version, integrity)."""
    lock = json.loads(LOCK.read_text())
    entry: dict[str, str] = lock["packages"][f"node_modules/{package}"]
    return entry


def manifest_for(package: str) -> dict[str, object]:
    """What ``VENDORED.json`` must say for ``package``, computed from ``node_modules``."""
    source = NODE_MODULES / package
    installed = json.loads((source / "package.json").read_text())["version"]
    entry = locked(package)
    if installed != entry["version"]:
        raise SystemExit(f"node_modules has {package} {installed}, package-lock.json {entry['version']}: run 'npm ci'")
    return {
        "package": package,
        "version": entry["version"],
        "integrity": entry["integrity"],
        "files": {name: sha256(source / name) for name in ASSETS[package]},
    }


def vendor(package: str) -> None:
    """Replace ``app/static/vendor/<package>/`` with the locked version's files."""
    manifest = manifest_for(package)
    target = VENDOR_DIR / package
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in ASSETS[package]:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(NODE_MODULES / package / name, target / name)
    (target / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    sys.stdout.write(f"vendored {package} {manifest['version']} into {target.relative_to(ROOT)}\n")


def differences(package: str) -> list[str]:
    """How ``app/static/vendor/<package>/`` differs from the locked version in ``node_modules`` (empty: same)."""
    target = VENDOR_DIR / package
    if not (target / MANIFEST).exists():
        return [f"{package}: not vendored"]
    expected = manifest_for(package)
    found = json.loads((target / MANIFEST).read_text())
    problems = [f"{package}: {MANIFEST} is stale"] if found != expected else []
    files: dict[str, str] = expected["files"]  # type: ignore[assignment]
    problems += [
        f"{package}/{name} differs from node_modules"
        for name, digest in files.items()
        if not (target / name).exists() or sha256(target / name) != digest
    ]
    return problems


def main() -> int:
    """Vendor every package of :data:`ASSETS`, or with ``--check`` report differences."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 when something differs")
    args = parser.parse_args()
    if not NODE_MODULES.is_dir():
        raise SystemExit("node_modules is missing: run 'npm ci' first")
    if args.check:
        problems = [problem for package in ASSETS for problem in differences(package)]
        for problem in problems:
            sys.stderr.write(problem + "\n")
        return 1 if problems else 0
    for package in ASSETS:
        vendor(package)
    return 0


if __name__ == "__main__":
    sys.exit(main())
