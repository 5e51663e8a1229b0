"""Lambda code for every SkyPACS function: one bundle of ``skypacs/``, ``functions/`` and their dependencies.

Every function (indexer, DICOMweb Chalice app, authorizer, plugins) runs from the same asset; only the
handler differs (``functions.indexer.handler.handler``, ``functions.dicomweb.app.app``, ...). One asset is
uploaded once, and a function never misses a module another one has.

Why local bundling: there is no Docker daemon on the build machines (nor in CI), so the asset is built by
``pip install --target`` on the host, asking pip for wheels of the *Lambda* platform (``--platform
manylinux..._<arch> --implementation cp --python-version 3.12 --only-binary=:all:``) instead of the host's.
Binary-only is what makes this safe: pip never compiles an sdist for the wrong platform; a dependency
without a manylinux wheel fails the build loudly. The Docker image in the bundling options is only CDK's
fallback for a bundler that declines, which this one never does.

boto3/botocore are bundled, pinned by the resolver like everything else, although the runtime ships them:
the runtime's copy changes when AWS updates it, independently of our tests, and a bundled copy shadows it
(``/var/task`` comes first on ``sys.path``). With s3transfer they take about 33 MB of the 250 MB unzipped
limit; the whole bundle is about 166 MiB.

Asset hash: a CUSTOM hash of exactly what goes in (the files copied from ``skypacs/`` and ``functions/``,
the requirements from ``pyproject.toml`` and the pip platform arguments). Fingerprinting the repository
root would read ``tests/``, ``cdk.out/`` and the rest on every synthesis and would change the asset on
every test edit. The hash does not cover the versions pip resolves (there is no lock file): a rebuild with
unchanged sources reuses the asset already staged or uploaded under that hash.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import jsii
from aws_cdk import aws_lambda as lambda_

REPO_ROOT = Path(__file__).resolve().parents[1]

LAMBDA_RUNTIME = lambda_.Runtime.PYTHON_3_12
"""python3.12 (Amazon Linux 2023): numpy 2.3+ wheels need its glibc."""

LAMBDA_ARCHITECTURE = lambda_.Architecture.X86_64

SOURCE_PACKAGES = ("skypacs", "functions")
"""Top-level directories of the repository copied into the bundle as they are."""

AWS_EXTRA = "aws"
"""The ``pyproject.toml`` extra with the Lambda-only dependencies (Powertools, Chalice, OpenSearch)."""

LAMBDA_GLIBC_MINOR = 34
"""Amazon Linux 2023 (the python3.12 runtime) has glibc 2.34: manylinux_2_17 .. 2_34 wheels run there.
Listed one by one because pip before 24 does not expand ``manylinux_2_28`` to the older glibc tags."""

LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024
"""Lambda's limit on the unzipped deployment package (function code and layers together)."""

BUNDLE_FORMAT = "1"
"""Part of the asset hash: bump it when the bundle layout changes without a source or requirement change."""

_EXCLUDED_DIRS = frozenset({"__pycache__", "tests", "test", ".mypy_cache", ".pytest_cache", ".ruff_cache"})
_EXCLUDED_SUFFIXES = (".pyc", ".pyo")
_STRIPPED_DIRS = frozenset({"__pycache__", "tests"})
"""Removed from installed dependencies: their own test suites and host-compiled bytecode (the host's
Python is not 3.12, and Lambda compiles in memory what has no valid ``.pyc``)."""


class BundlingError(RuntimeError):
    """The bundle could not be built; the message says why and what pip said."""


def _python_version(runtime: lambda_.Runtime = LAMBDA_RUNTIME) -> str:
    """``3.12`` from ``python3.12``: the interpreter pip selects wheels for."""
    return runtime.name.removeprefix("python")


def _machine(architecture: lambda_.Architecture) -> str:
    """The wheel tag's machine for a Lambda architecture (``arm64`` is ``aarch64`` in manylinux tags)."""
    return {"x86_64": "x86_64", "arm64": "aarch64"}[architecture.name]


def platform_tags(architecture: lambda_.Architecture = LAMBDA_ARCHITECTURE) -> list[str]:
    """The manylinux platform tags pip may pick wheels for, newest glibc first."""
    machine = _machine(architecture)
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(LAMBDA_GLIBC_MINOR, 16, -1)]
    return ["manylinux2014_" + machine, *tags]


NO_DEPS = {
    "chalice": "Lambda runs only chalice.app, which needs the standard library alone; the CLI's dependencies "
    "(pip, setuptools, wheel, inquirer, click, pyyaml: about 20 MB) are for deploying, and Chalice's own "
    "packager ships only chalice/app.py for the same reason",
}
"""Distributions installed without their dependencies, each with the reason."""


def _name(requirement: str) -> str:
    """The normalized distribution name of a PEP 508 requirement (``pyjwt[crypto]>=2.8`` -> ``pyjwt``)."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def requirements(root: Path = REPO_ROOT) -> list[str]:
    """What ``skypacs[aws]`` needs at run time: the core dependencies and the ``aws`` extra."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"][AWS_EXTRA]]


def pip_install_args(
    target: str,
    *,
    root: Path = REPO_ROOT,
    architecture: lambda_.Architecture = LAMBDA_ARCHITECTURE,
) -> list[list[str]]:
    """``pip install`` argument lists (after ``python -m pip``) for the Lambda platform, into ``target``.

    Two runs: the requirements with their dependencies, then those of :data:`NO_DEPS` without theirs.
    Environment markers are evaluated by the pip that runs (the host's Python), not for 3.12: pip's
    limitation; none of the current dependencies has a marker that tells 3.11 from 3.12.
    """
    platforms = [arg for tag in platform_tags(architecture) for arg in ("--platform", tag)]
    common = [
        "install",
        "--target", target,
        *platforms,
        "--implementation", "cp",
        "--python-version", _python_version(),
        "--only-binary=:all:",
        "--upgrade",
        "--no-compile",  # bytecode of the host's Python would be useless on 3.12
        "--disable-pip-version-check",
    ]
    wanted = requirements(root)
    with_deps = [r for r in wanted if _name(r) not in NO_DEPS]
    without_deps = [r for r in wanted if _name(r) in NO_DEPS]
    runs = [[*common, *with_deps]]
    if without_deps:
        runs.append([*common, "--no-deps", *without_deps])
    return runs


def source_files(root: Path = REPO_ROOT) -> Iterator[Path]:
    """The files copied from ``root`` into the bundle, relative to ``root``, in a stable order.

    No tests, bytecode or tool caches: what the functions import, and data files beside it (``py.typed``).
    """
    for package in SOURCE_PACKAGES:
        for dirpath, dirnames, filenames in os.walk(root / package):
            dirnames[:] = sorted(d for d in dirnames if d not in _EXCLUDED_DIRS and not d.startswith("."))
            for name in sorted(filenames):
                if not name.endswith(_EXCLUDED_SUFFIXES) and not name.startswith("."):
                    yield (Path(dirpath) / name).relative_to(root)


def source_hash(
    root: Path = REPO_ROOT, architecture: lambda_.Architecture = LAMBDA_ARCHITECTURE
) -> str:
    """The asset hash: bundled file paths and contents, requirements and pip platform arguments.

    Independent of where the checkout lives and of file times, so that every machine computes the same.
    """
    digest = hashlib.sha256()
    for args in [[BUNDLE_FORMAT], *pip_install_args("<target>", root=root, architecture=architecture)]:
        digest.update("\0".join(args).encode() + b"\n")
    for relative in source_files(root):
        data = (root / relative).read_bytes()
        digest.update(relative.as_posix().encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return digest.hexdigest()


def _strip(bundle: Path) -> None:
    """Remove what the functions never load: test suites of dependencies, bytecode, console scripts."""
    shutil.rmtree(bundle / "bin", ignore_errors=True)  # entry-point scripts with the host's shebang
    for dirpath, dirnames, filenames in os.walk(bundle, topdown=True):
        for name in [d for d in dirnames if d in _STRIPPED_DIRS]:
            shutil.rmtree(Path(dirpath) / name)
            dirnames.remove(name)
        for name in filenames:
            if name.endswith(_EXCLUDED_SUFFIXES):
                (Path(dirpath) / name).unlink()


def bundle_size(bundle: Path) -> int:
    """Bytes of all files in ``bundle``: what Lambda counts against its unzipped limit."""
    return sum(
        (Path(dirpath) / name).lstat().st_size
        for dirpath, _, filenames in os.walk(bundle)
        for name in filenames
    )


def build_bundle(
    output_dir: str | os.PathLike[str],
    *,
    root: Path = REPO_ROOT,
    architecture: lambda_.Architecture = LAMBDA_ARCHITECTURE,
    python: str = sys.executable,
) -> Path:
    """Build the bundle into ``output_dir``: Lambda-platform wheels, then the SkyPACS sources.

    pip keeps its download cache, so a second build downloads nothing. Raises :class:`BundlingError`
    when pip fails (an unreachable index, a dependency without a wheel for the platform) or the bundle
    is over Lambda's limit: a half-built asset must never be deployed.
    """
    bundle = Path(output_dir)
    bundle.mkdir(parents=True, exist_ok=True)
    for args in pip_install_args(str(bundle), root=root, architecture=architecture):
        command = [python, "-m", "pip", *args]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
            raise BundlingError(
                f"pip could not install the Lambda dependencies for python{_python_version()} "
                f"{_machine(architecture)} (is the package index reachable?).\n"
                f"command: {shlex.join(command)}\n{tail}"
            )
    for relative in source_files(root):
        destination = bundle / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / relative, destination)
    _strip(bundle)
    size = bundle_size(bundle)
    if size >= LAMBDA_UNZIPPED_LIMIT:
        raise BundlingError(f"bundle is {size / 2**20:.1f} MiB unzipped, over Lambda's 250 MiB limit")
    return bundle


@jsii.implements(cdk.ILocalBundling)
class LocalBundler:
    """CDK local bundling: builds the bundle on the host, so no Docker daemon is needed."""

    def __init__(
        self, *, root: Path = REPO_ROOT, architecture: lambda_.Architecture = LAMBDA_ARCHITECTURE
    ) -> None:
        self._root = root
        self._architecture = architecture

    def try_bundle(self, output_dir: str, *, image: cdk.DockerImage, **options: Any) -> bool:
        # jsii spreads the BundlingOptions struct over the keyword-only parameters; the bundle needs none.
        # Never declines: the Docker fallback would fail here anyway; a BundlingError stops the synthesis
        # with pip's message, which jsii passes on.
        build_bundle(output_dir, root=self._root, architecture=self._architecture)
        return True


def _docker_command(architecture: lambda_.Architecture) -> list[str]:
    """The same build inside the SAM build image (CDK's fallback, used only if local bundling declines)."""
    pip = " && ".join(
        shlex.join(["pip", *args]) for args in pip_install_args("/asset-output", architecture=architecture)
    )
    copy = " && ".join(f"cp -r /asset-input/{package} /asset-output/" for package in SOURCE_PACKAGES)
    clean = (
        "find /asset-output -depth \\( -name __pycache__ -o -name tests \\) -type d -exec rm -rf {} + ;"
        " rm -rf /asset-output/bin"
    )
    return ["bash", "-c", f"{pip} && {copy} && {clean}"]


_BUNDLERS: dict[str, LocalBundler] = {}


def lambda_code(architecture: lambda_.Architecture = LAMBDA_ARCHITECTURE) -> lambda_.Code:
    """The one code asset every SkyPACS Lambda function runs (handlers differ).

    Cheap to call once per function: CDK stages assets with equal source, hash and bundling options once
    per synthesis, and skips bundling entirely when the output directory for the hash already exists.
    With the context ``aws:cdk:bundling-stacks: []`` nothing is built; the cost is hashing the sources.
    """
    # One bundler object per architecture, so that the bundling options of every call are identical.
    bundler = _BUNDLERS.setdefault(architecture.name, LocalBundler(architecture=architecture))
    return lambda_.Code.from_asset(
        str(REPO_ROOT),
        asset_hash_type=cdk.AssetHashType.CUSTOM,
        asset_hash=source_hash(REPO_ROOT, architecture),
        bundling=cdk.BundlingOptions(
            image=LAMBDA_RUNTIME.bundling_image,
            local=bundler,
            command=_docker_command(architecture),
            platform=architecture.docker_platform,
        ),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m infra.bundling --out DIR``: build the bundle outside CDK, to inspect it or time it."""
    parser = argparse.ArgumentParser(prog="python -m infra.bundling", description=main.__doc__)
    parser.add_argument("--out", required=True, type=Path, help="empty or new directory for the bundle")
    parser.add_argument("--architecture", choices=("x86_64", "arm64"), default=LAMBDA_ARCHITECTURE.name)
    args = parser.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"{args.out} is not empty; pip --target would mix old and new files")
    architecture = {"x86_64": lambda_.Architecture.X86_64, "arm64": lambda_.Architecture.ARM_64}[
        args.architecture
    ]
    started = time.monotonic()
    try:
        build_bundle(args.out, architecture=architecture)
    except BundlingError as exc:
        print(exc, file=sys.stderr)
        return 1
    elapsed = time.monotonic() - started
    size = bundle_size(args.out)
    print(
        f"{args.out}: {size / 2**20:.1f} MiB unzipped "
        f"({size / LAMBDA_UNZIPPED_LIMIT:.0%} of Lambda's limit), "
        f"built in {elapsed:.1f} s; asset hash {source_hash(REPO_ROOT, architecture)[:12]}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
