"""Locked installs: the test environment's constraints and each container image's pinned requirements.

    python tools/lock.py check-images     # CI: each image's pins resolve for its base (Python, torch), no build needed
    python tools/lock.py images           # re-resolve the image pins from pyproject.toml (newest that fits each base)
    python tools/lock.py refresh          # rebuild requirements/constraints.txt from the newest versions, then test
    python tools/lock.py try-newest       # install the newest versions in a scratch venv, run the tests, report

The files:
- `requirements/constraints.txt`: every package of the full test environment
  (`.[dev,rembg,heif,gpu,cdk,aws-sim,train,provenance]`), pinned. README's set-up commands and CI install with `-c`
  from it, so a green CI stays green on a fresh machine.
- `requirements/image-*.txt`: what each image installs, pinned and resolved against the image's base
  (`public.ecr.aws/lambda/python:3.12` for the Lambdas, the pytorch image's Python and torch for the GPU jobs).
  No image can be built here; `check-images` proves the pins resolve for that base with a pip dry run.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REQUIREMENTS = REPO / "requirements"
CONSTRAINTS = REQUIREMENTS / "constraints.txt"
TEST_EXTRAS = "dev,rembg,heif,gpu,cdk,aws-sim,train,provenance"
CPU_TORCH = "torch==2.13.0"  # the local CPU wheel; an unpinned torch pulls GBs of CUDA packages
# Provided by the GPU base image (conda torch with its CUDA libraries): resolved against, never installed.
BASE_PROVIDED = ("torch", "triton", "nvidia-")


@dataclass(frozen=True)
class Image:
    """One container image: its pinned requirements file, what it installs, and its base's Python and torch."""

    name: str
    python: str
    requirements: tuple[str, ...]
    torch: str | None = None

    @property
    def pins(self) -> Path:
        return REQUIREMENTS / f"image-{self.name}.txt"


IMAGES = (
    # functions/Dockerfile.lambda: the routing, review and checks handlers (no torch, rembg or OpenCV).
    Image(
        "lambda",
        "3.12",
        (
            "pydantic[email]>=2.7,<3",
            "aws-lambda-powertools[parser,tracer]>=3.0",
            "boto3>=1.35",
            "pillow>=10.3",
            "numpy>=1.26",
            "httpx>=0.27",
        ),
    ),
    # functions/Dockerfile.prepare: the project with rembg (CPU onnxruntime) and HEIF.
    Image("prepare", "3.12", (".[rembg,heif]", "aws-lambda-powertools[tracer]>=3.0")),
    # gpu_jobs/Dockerfile: FROM pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime (Python 3.11, torch 2.7.1).
    Image("gpu", "3.11", (".[gpu]", "onnxruntime-gpu>=1.18"), torch="2.7.1"),
)


def _pip(*args: str, python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    return subprocess.run([python, "-m", "pip", *args], cwd=REPO, text=True, capture_output=True)


def _resolve(image: Image, extra: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """Resolve the image's requirements for its base with a pip dry run; returns (name, version) pairs."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        args = ["install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report)]
        if image.python != f"{sys.version_info.major}.{sys.version_info.minor}":
            # Another Python: wheels only, for the base's platform (Amazon Linux 2023: glibc 2.34, x86_64).
            args += ["--python-version", image.python, "--only-binary=:all:"]
            args += [f"--platform=manylinux_2_{minor}_x86_64" for minor in (34, 28, 17)] + [
                "--platform=manylinux2014_x86_64"
            ]
            args += ["--target", str(Path(scratch) / "target")]
        pinned_torch = [f"torch=={image.torch}"] if image.torch else []
        done = _pip(*args, *extra, *image.requirements, *pinned_torch)
        if done.returncode != 0:
            raise SystemExit(f"{image.name}: the requirements do not resolve for its base:\n{done.stderr[-4000:]}")
        installs = json.loads(report.read_text())["install"]
    return sorted(
        (item["metadata"]["name"].lower(), item["metadata"]["version"])
        for item in installs
        if item["metadata"]["name"] != "catalog-image-processor"
    )


def write_images() -> None:
    for image in IMAGES:
        pins = _resolve(image)
        lines = [f"# {image.name} image: resolved by tools/lock.py for Python {image.python}"]
        if image.torch:
            lines[0] += f" and the base image's torch {image.torch} (torch and CUDA libraries come with the base)"
        lines += [f"{name}=={version}" for name, version in pins if not name.startswith(BASE_PROVIDED)]
        if image.torch:
            lines.append(f"torch=={image.torch}")
        image.pins.write_text("\n".join(lines) + "\n")
        print(f"wrote {image.pins.relative_to(REPO)} ({len(pins)} packages)")


def check_images() -> None:
    """Each image's pins, as a constraint, still resolve for its base: the CI check that needs no Docker."""
    for image in IMAGES:
        if not image.pins.is_file():
            raise SystemExit(f"{image.pins} is missing: run `python tools/lock.py images`")
        pins = _resolve(image, ("-c", str(image.pins)))
        print(f"{image.name}: {len(pins)} packages resolve for Python {image.python}", end="")
        print(f" and torch {image.torch}" if image.torch else "")


def _scratch_venv(folder: Path) -> str:
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    return str(folder / "bin" / "python")


def _install_newest(python: str) -> None:
    for args in (["install", CPU_TORCH], ["install", "--upgrade", "-e", f".[{TEST_EXTRAS}]"]):
        done = _pip(*args, python=python)
        if done.returncode != 0:
            raise SystemExit(f"pip {' '.join(args)} failed:\n{done.stderr[-4000:]}")


def _freeze(python: str) -> list[str]:
    lines = _pip("freeze", "--exclude-editable", python=python).stdout.splitlines()
    pins = [line for line in lines if line and not line.startswith(("catalog-image-processor", "-e "))]
    return [CPU_TORCH if line.startswith("torch==") else line for line in pins]


def refresh() -> None:
    """Newest versions in a scratch venv, the suite run there, then the constraints rewritten if it passed."""
    with tempfile.TemporaryDirectory() as scratch:
        python = _scratch_venv(Path(scratch) / "venv")
        _install_newest(python)
        tests = subprocess.run([python, "-m", "pytest", "-n", "auto", "-q"], cwd=REPO)
        if tests.returncode != 0:
            raise SystemExit("the suite fails on the newest versions: constraints left as they are (see above)")
        header = "# The full test environment, pinned. Refresh: python tools/lock.py refresh\n"
        CONSTRAINTS.write_text(header + "\n".join(_freeze(python)) + "\n")
        print(f"wrote {CONSTRAINTS.relative_to(REPO)}")


def try_newest() -> None:
    """Report which packages moved past the lock and whether the suite still passes on them."""
    locked = dict(line.split("==", 1) for line in CONSTRAINTS.read_text().splitlines() if "==" in line)
    with tempfile.TemporaryDirectory() as scratch:
        python = _scratch_venv(Path(scratch) / "venv")
        _install_newest(python)
        newest = dict(line.split("==", 1) for line in _freeze(python) if "==" in line)
        moved = {name: (locked.get(name), version) for name, version in newest.items() if locked.get(name) != version}
        for name, (old, new) in sorted(moved.items()):
            print(f"{name}: {old or 'new'} -> {new}")
        tests = subprocess.run([python, "-m", "pytest", "-n", "auto", "-q", "-x"], cwd=REPO)
        print("newest versions: " + ("the suite passes" if tests.returncode == 0 else "the suite FAILS (see above)"))
        raise SystemExit(tests.returncode)


def main() -> None:
    commands = {"check-images": check_images, "images": write_images, "refresh": refresh, "try-newest": try_newest}
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=sorted(commands))
    os.environ.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    commands[parser.parse_args().command]()


if __name__ == "__main__":
    main()
