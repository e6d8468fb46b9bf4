"""Print the requirements of fraudmesh from pyproject.toml, one per line, for `pip install -r ... -c requirements.lock`.

    python deps_of.py ""                          # the serving dependencies
    python deps_of.py neo4j                       # plus the neo4j extra
    python deps_of.py bootstrap --extras-only     # only the bootstrap extra

Used by the Dockerfile (stdlib only: it runs before anything is installed). An extra that names the project
itself (`fraudmesh[bootstrap]`) is expanded.
"""

import sys
import tomllib
from pathlib import Path
from typing import Any


def requirements(project: dict[str, Any], extras: list[str], base: bool) -> list[str]:
    optional: dict[str, list[str]] = project.get("optional-dependencies") or {}
    name = str(project["name"])
    out: list[str] = list(project["dependencies"]) if base else []
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop(0)
        if extra in seen:
            continue
        seen.add(extra)
        if extra not in optional:
            sys.exit(f"unknown extra {extra!r}: pyproject.toml has {sorted(optional)}")
        for req in optional[extra]:
            if req.startswith(name + "["):
                todo += req[len(name) + 1 : req.index("]")].split(",")
            elif req not in out:
                out.append(req)
    return out


def main(argv: list[str]) -> None:
    extras = [e.strip() for e in (argv[0] if argv else "").split(",") if e.strip()]
    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    print("\n".join(requirements(project, extras, base="--extras-only" not in argv)))


if __name__ == "__main__":
    main(sys.argv[1:])
