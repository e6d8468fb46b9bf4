"""model-init in containers: install the bootstrap model that the image was built with into the model dir.

The Dockerfile trains the seeded bootstrap model (`fraudmesh model init`) in a builder stage and copies it to
/opt/fraudmesh/bootstrap-models, so the serving image needs no scikit-learn. This script (stdlib only) copies
it into --model-dir (default $FRAUDMESH_MODEL_DIR) and activates it, unless that directory already has an
active model: a restart, or a model published since, is left alone. Exit 0 on success.
"""

import argparse
import os
import shutil
import sys
from pathlib import Path

SOURCE = Path("/opt/fraudmesh/bootstrap-models")


def install(source: Path, target: Path) -> str:
    active = target / "active"
    if active.exists():
        return f"{target} already has an active model ({active.read_text().strip()}); nothing to do"
    if not (source / "active").exists():
        sys.exit(f"no bootstrap model in {source}: the image was built without one (see the Dockerfile)")
    target.mkdir(parents=True, exist_ok=True)
    for version in sorted(p for p in source.iterdir() if p.is_dir()):
        shutil.copytree(version, target / version.name, dirs_exist_ok=True)
    tmp = target / ".active.tmp"
    shutil.copyfile(source / "active", tmp)
    tmp.replace(active)  # last, so inference never sees an active version that is not all there
    return f"bootstrap model {active.read_text().strip()} installed in {target} and activated"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path(os.environ.get("FRAUDMESH_MODEL_DIR", "var/models")))
    parser.add_argument("--source", type=Path, default=SOURCE)
    args = parser.parse_args()
    print(install(args.source, args.model_dir))


if __name__ == "__main__":
    main()
