"""The one Lambda code asset: its hash, CDK's use of the local bundler, and the real bundle on python3.12.

Fast tests synthesize one app: a stack with bundling skipped (as every other infra test synthesizes), and a
stack with bundling on whose bundler is replaced by a fake, which proves that CDK calls it through jsii,
once for several functions.

The slow test builds the real bundle (manylinux wheels for cp312 x86_64, from the package index) once per
module and imports every entry point and codec from it with an isolated python3.12. An unreachable index
FAILS it: a skipped bundle test would hide a broken deploy. Only the import check skips, and only where no
Python 3.12 interpreter exists (none can be installed from the registries these machines reach).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_lambda as lambda_
from aws_cdk.assertions import Template

from infra import bundling

PYTHON312_CANDIDATES = (shutil.which("python3.12"), "/root/.pyenv/versions/3.12.1/bin/python")
SKIPPED_STACK = "Skipped"
BUNDLED_STACK = "Bundled"


# --- requirements, platform, pip arguments ---------------------------------------------------------------


def test_requirements_are_core_and_aws_extra_only() -> None:
    names = {bundling._name(r) for r in bundling.requirements()}
    assert {"pydicom", "pynetdicom", "numpy", "pillow", "pylibjpeg-openjpeg", "pyjpegls", "boto3"} <= names
    assert {"aws-lambda-powertools", "chalice", "opensearch-py"} <= names
    assert not names & {"pytest", "moto", "aws-cdk-lib", "cdk-nag"}


def test_platform_tags_follow_the_architecture() -> None:
    x86 = bundling.platform_tags(lambda_.Architecture.X86_64)
    arm = bundling.platform_tags(lambda_.Architecture.ARM_64)
    assert {"manylinux2014_x86_64", "manylinux_2_28_x86_64"} <= set(x86)
    assert {"manylinux2014_aarch64", "manylinux_2_28_aarch64"} <= set(arm)
    assert all(tag.endswith("_x86_64") for tag in x86) and all(tag.endswith("_aarch64") for tag in arm)
    # Nothing newer than Amazon Linux 2023's glibc 2.34.
    assert "manylinux_2_34_x86_64" in x86 and "manylinux_2_35_x86_64" not in x86


def test_pip_installs_binary_wheels_for_the_lambda_python() -> None:
    main, no_deps = bundling.pip_install_args("/out")
    assert bundling.LAMBDA_RUNTIME.name == "python3.12"
    for args in (main, no_deps):
        joined = " ".join(args)
        assert joined.startswith("install --target /out ")
        assert "--implementation cp --python-version 3.12 --only-binary=:all: --upgrade" in joined
    wanted = bundling.requirements()
    assert "chalice" not in {bundling._name(a) for a in main if a in wanted}
    assert "--no-deps" in no_deps and any(a.startswith("chalice") for a in no_deps)


def test_a_failing_pip_is_an_error_that_says_so(tmp_path: Path) -> None:
    # What an unreachable index looks like to the caller: no half-built asset, pip's command in the message.
    with pytest.raises(bundling.BundlingError, match="is the package index reachable"):
        bundling.build_bundle(tmp_path, python="/bin/false")
    assert not (tmp_path / "skypacs").exists()


# --- asset hash --------------------------------------------------------------------------------------------


def _copy_sources(destination: Path) -> Path:
    for package in bundling.SOURCE_PACKAGES:
        shutil.copytree(
            bundling.REPO_ROOT / package, destination / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(bundling.REPO_ROOT / "pyproject.toml", destination / "pyproject.toml")
    return destination


def test_source_files_are_code_without_tests_or_bytecode() -> None:
    files = [p.as_posix() for p in bundling.source_files()]
    assert "functions/indexer/handler.py" in files and "functions/dicomweb/app.py" in files
    assert "skypacs/aws.py" in files and "skypacs/py.typed" in files
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc") or f.startswith("tests/")]


def test_hash_depends_on_what_goes_in_only(tmp_path: Path) -> None:
    started = time.monotonic()
    reference = bundling.source_hash()
    elapsed = time.monotonic() - started
    copy = _copy_sources(tmp_path / "checkout")
    # Same content elsewhere: same hash (no absolute paths or times in it).
    assert bundling.source_hash(copy) == reference
    # Tests, bytecode and other top-level files do not go in, so they do not count.
    (copy / "tests").mkdir()
    (copy / "tests" / "test_new.py").write_text("def test_x(): pass\n")
    (copy / "skypacs" / "__pycache__").mkdir(exist_ok=True)
    (copy / "skypacs" / "__pycache__" / "aws.cpython-312.pyc").write_bytes(b"\0")
    (copy / "README.md").write_text("edited\n")
    assert bundling.source_hash(copy) == reference
    # A change to the core changes the asset.
    (copy / "skypacs" / "aws.py").write_text((copy / "skypacs" / "aws.py").read_text() + "\n# edited\n")
    changed = bundling.source_hash(copy)
    assert changed != reference
    # So does a new dependency, and another architecture.
    pyproject = copy / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"tqdm>=4.66",', '"tqdm>=4.66", "attrs",'))
    assert bundling.source_hash(copy) != changed
    assert bundling.source_hash(copy, lambda_.Architecture.ARM_64) != bundling.source_hash(copy)
    # Synthesis pays this once per function: it must stay far below a second.
    assert elapsed < 1.0, f"hashing the sources took {elapsed:.2f} s"


# --- CDK: bundling skipped, and bundling through the local bundler -----------------------------------------


class FakeBuild:
    """Stands in for the pip build: records each call and writes a handler, as a bundle would have."""

    def __init__(self) -> None:
        self.output_dirs: list[str] = []

    def __call__(self, output_dir: str, **_: Any) -> Path:
        self.output_dirs.append(output_dir)
        handler = Path(output_dir) / "functions" / "indexer" / "handler.py"
        handler.parent.mkdir(parents=True)
        handler.write_text("def handler(event, context): return None\n")
        return Path(output_dir)


def _add_functions(stack: cdk.Stack, count: int) -> None:
    for number in range(count):
        lambda_.Function(
            stack,
            f"Function{number}",
            runtime=bundling.LAMBDA_RUNTIME,
            architecture=bundling.LAMBDA_ARCHITECTURE,
            handler="functions.indexer.handler.handler",
            code=bundling.lambda_code(),
        )


@pytest.fixture(scope="module")
def synthesized(
    cdk_context: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> tuple[cdk.App, FakeBuild, float]:
    # One app, two stacks: bundling is on only for the stack matching "aws:cdk:bundling-stacks".
    fake = FakeBuild()
    outdir = tmp_path_factory.mktemp("cdk.out")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bundling, "build_bundle", fake)
        app = cdk.App(context={**cdk_context, "aws:cdk:bundling-stacks": [BUNDLED_STACK]}, outdir=str(outdir))
        skipped = cdk.Stack(app, SKIPPED_STACK)
        started = time.monotonic()
        _add_functions(skipped, 1)
        skipped_cost = time.monotonic() - started
        _add_functions(cdk.Stack(app, BUNDLED_STACK), 2)
        app.synth()
    return app, fake, skipped_cost


def _stack(app: cdk.App, name: str) -> cdk.Stack:
    stack = app.node.find_child(name)
    assert isinstance(stack, cdk.Stack)
    return stack


def test_skipped_bundling_synthesizes_a_python312_function(
    synthesized: tuple[cdk.App, FakeBuild, float],
) -> None:
    app, _, skipped_cost = synthesized
    template = Template.from_stack(_stack(app, SKIPPED_STACK))
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Runtime": "python3.12",
            "Architectures": ["x86_64"],
            "Handler": "functions.indexer.handler.handler",
        },
    )
    # Generous bound for a loaded machine; measured at about 0.1 s (hash, staging without bundling).
    assert skipped_cost < 3.0, f"one lambda_code() with bundling skipped took {skipped_cost:.2f} s"


def test_skipped_stack_never_bundles_and_bundled_stack_bundles_once(
    synthesized: tuple[cdk.App, FakeBuild, float],
) -> None:
    app, fake, _ = synthesized
    # Two functions in the bundled stack, one asset: CDK stages equal assets once.
    assert len(fake.output_dirs) == 1, fake.output_dirs
    outdir = Path(app.outdir)
    staged = [p for p in outdir.glob("asset.*") if (p / "functions" / "indexer" / "handler.py").is_file()]
    assert len(staged) == 1, sorted(p.name for p in outdir.iterdir())
    template = Template.from_stack(_stack(app, BUNDLED_STACK)).to_json()
    keys = {
        r["Properties"]["Code"]["S3Key"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Lambda::Function"
    }
    assert keys == {staged[0].name.removeprefix("asset.") + ".zip"}


# --- the real bundle ---------------------------------------------------------------------------------------


def _python312() -> str | None:
    for candidate in PYTHON312_CANDIDATES:
        if not candidate:
            continue
        try:
            result = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 12))"],
                capture_output=True, text=True, timeout=60, check=False,
            )
        except OSError:
            continue
        if result.stdout.strip() == "True":  # a pyenv shim without 3.12 selected prints an error instead
            return candidate
    return None


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("bundle")
    started = time.monotonic()
    try:
        bundling.build_bundle(output)
    except bundling.BundlingError as exc:
        pytest.fail(
            f"the Lambda bundle could not be built; a deploy would fail the same way.\n{exc}",
            pytrace=False,
        )
    size = bundling.bundle_size(output)
    elapsed = time.monotonic() - started
    print(f"bundle built in {elapsed:.1f} s, {size / 2**20:.1f} MiB unzipped", file=sys.stderr)
    return output


IMPORT_CHECK = """
import sys
sys.path.insert(0, sys.argv[1])
import functions.indexer.handler
import functions.dicomweb.app as dicomweb
import skypacs.aws
import boto3, jwt, numpy, PIL.Image
import openjpeg, jpeg_ls, libjpeg, pylibjpeg, rle
from chalice.app import Chalice
from pydicom.data import get_testdata_file
from pydicom.pixels import pixel_array

assert isinstance(dicomweb.app, Chalice)
for module in (functions.indexer.handler, numpy, boto3, openjpeg):
    assert module.__file__.startswith(sys.argv[1]), module.__file__
assert not [p for p in sys.path if "site-packages" in p], sys.path
# Each codec decodes a file that ships with pydicom, through pydicom's pixel handlers and the named plugin
# (pylibjpeg: openjpeg, libjpeg, rle; pyjpegls: CharLS), so a native library that fails to load shows.
for name, plugin in (
    ("JPEG2000.dcm", "pylibjpeg"),
    ("SC_rgb_jpeg_gdcm.dcm", "pylibjpeg"),
    ("MR_small_jpeg_ls_lossless.dcm", "pyjpegls"),
    ("MR_small_RLE.dcm", "pylibjpeg"),
):
    pixels = pixel_array(get_testdata_file(name), decoding_plugin=plugin)
    assert pixels.size > 0 and pixels.any(), name
print("ok", numpy.__version__)
"""


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_bundle_is_under_the_lambda_limit(bundle: Path) -> None:
    size = bundling.bundle_size(bundle)
    assert size < bundling.LAMBDA_UNZIPPED_LIMIT, f"{size / 2**20:.1f} MiB unzipped"
    assert (bundle / "functions" / "dicomweb" / "app.py").is_file()
    assert not list(bundle.rglob("__pycache__")) and not (bundle / "bin").exists()
    # Wheels of the Lambda platform, not of the host (which is not 3.12).
    assert list(bundle.glob("numpy/_core/_multiarray_umath.cpython-312-x86_64-linux-gnu.so"))


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_bundle_imports_on_an_isolated_python312(bundle: Path) -> None:
    python = _python312()
    if python is None:
        pytest.skip(f"no python3.12 to import the bundle with (tried {PYTHON312_CANDIDATES})")
    # -I: no user site, no PYTHON* variables; -S: no site-packages. Only the bundle and the standard library.
    result = subprocess.run(
        [python, "-I", "-S", "-c", IMPORT_CHECK, str(bundle)],
        capture_output=True, text=True, timeout=300, check=False, cwd=bundle,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.startswith("ok")
