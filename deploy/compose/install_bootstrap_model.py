"""model-init in containers: install the bootstrap models that the image was built with into the model dirs.

The Dockerfile trains the seeded bootstrap models in a builder stage (`fraudmesh model init`, for the fraud and the
personalization family) and copies them to /opt/fraudmesh/bootstrap-models and
/opt/fraudmesh/bootstrap-models-personalization, so the serving image needs no scikit-learn. This script (stdlib only)
copies each into its family's directory (--model-dir, default $FRAUDMESH_MODEL_DIR; --personalization-dir, default
$FRAUDMESH_PERSONALIZATION_MODEL_DIR or `<model dir>-personalization`) and activates it, unless that directory already
has an active model: a restart, or a model published since, is left alone. Then it loads the user, item and session
features of the active personalization model's world into Redis (`python -m feature_svc.world.personalization
--model-dir`, as `fraudmesh up` does), so `POST /score/personalization` scores the users that model knows.
Exit 0 on success.
"""

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

SOURCE = Path("/opt/fraudmesh/bootstrap-models")
PERSONALIZATION_SOURCE = Path("/opt/fraudmesh/bootstrap-models-personalization")


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


def load_features(directory: Path) -> None:
    cmd = [sys.executable, "-m", "feature_svc.world.personalization", "--model-dir", str(directory)]
    res = subprocess.run(cmd, check=False)
    if res.returncode != 0:
        sys.exit(f"loading the personalization features failed ({' '.join(cmd)} exited {res.returncode})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model_dir = Path(os.environ.get("FRAUDMESH_MODEL_DIR", "var/models"))
    pers_dir = os.environ.get("FRAUDMESH_PERSONALIZATION_MODEL_DIR", "")
    parser.add_argument("--model-dir", type=Path, default=model_dir)
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--personalization-dir", type=Path, default=Path(pers_dir) if pers_dir else None)
    parser.add_argument("--personalization-source", type=Path, default=PERSONALIZATION_SOURCE)
    parser.add_argument("--no-features", action="store_true", help="do not load the personalization features")
    args = parser.parse_args()
    print(install(args.source, args.model_dir), flush=True)
    pers = args.personalization_dir or Path(f"{str(args.model_dir).rstrip('/')}-personalization")
    print(install(args.personalization_source, pers), flush=True)
    if not args.no_features:
        load_features(pers)


if __name__ == "__main__":
    main()
