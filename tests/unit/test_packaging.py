"""Packaging promises: the light set stays light, and the README's commands are the ones CI runs."""

import re
import subprocess
import sys
import tomllib

import pytest

from tests.conftest import REPO_ROOT

HEAVY = ("torch", "diffusers", "transformers", "peft", "accelerate", "rembg", "onnxruntime")


def test_the_base_install_does_not_pull_ml_libraries():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    base = [re.split(r"[<>=\[ ;]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]]
    assert not set(base) & set(HEAVY)
    # The gpu extra admits the local CPU wheel, so installing torch==2.13.0 first pulls nothing more.
    assert any(dep.startswith("torch>=") and "<2.13" not in dep for dep in project["optional-dependencies"]["gpu"])


def test_light_modules_import_no_ml_library():
    # Given a fresh interpreter
    code = (
        "import sys, schemas, schemas.export, functions.errors, functions.stages.background;"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    # When the contracts and the background interface are imported
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    # Then no ML library came with them
    assert out.strip() == "[]"


def _fenced_commands(text: str) -> list[str]:
    return [c.strip() for c in re.findall(r"```bash\n(.+?)\n\s*```", text, flags=re.DOTALL)]


def test_readme_has_two_setup_commands_and_ci_runs_the_second():
    readme = (REPO_ROOT / "README.md").read_text()
    setup = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    commands = _fenced_commands(setup)
    assert len(commands) == 2
    assert "catalog run" in commands[0]
    assert "pytest" in commands[1]
    assert commands[1] in (REPO_ROOT / ".ci" / "run").read_text()


def test_installs_come_from_the_lock():
    # Given the README's set-up commands and the images' Dockerfiles
    readme = (REPO_ROOT / "README.md").read_text()
    commands = _fenced_commands(readme.split("## Set up", 1)[1].split("\n## ", 1)[0])
    constraints = (REPO_ROOT / "requirements" / "constraints.txt").read_text().splitlines()

    # Then every pip install in them is constrained by the lock, whose torch is the CPU wheel
    for command in commands:
        installs = [part for part in command.split("&&") if "pip install" in part]
        assert installs and all("-c requirements/constraints.txt" in part for part in installs), command
    assert "torch==2.13.0" in constraints
    pinned = [line for line in constraints if line and not line.startswith("#")]
    assert pinned and all("==" in line for line in pinned)
    # And each image installs from its own pins, resolved for its base by tools/lock.py
    for dockerfile, pins in (
        ("functions/Dockerfile.lambda", "image-lambda.txt"),
        ("functions/Dockerfile.prepare", "image-prepare.txt"),
        ("gpu_jobs/Dockerfile", "image-gpu.txt"),
    ):
        assert f"requirements/{pins}" in (REPO_ROOT / dockerfile).read_text()
        assert (REPO_ROOT / "requirements" / pins).is_file()


@pytest.mark.parametrize("dockerfile", ["functions/Dockerfile.lambda", "functions/Dockerfile.prepare"])
def test_lambda_images_ship_our_code_as_bytecode(dockerfile):
    # Given a Lambda image's Dockerfile (its task root is read-only at run time: Python cannot cache bytecode there)
    lines = (REPO_ROOT / dockerfile).read_text().splitlines()
    copied = max(index for index, line in enumerate(lines) if line.startswith("COPY") and "functions" in line)
    compiled = [index for index, line in enumerate(lines) if "python -m compileall" in line]

    # Then it compiles our packages after copying them in, so no cold start compiles them again
    assert compiled and compiled[0] > copied
    assert "schemas" in lines[compiled[0]] and "functions" in lines[compiled[0]]
