"""The package as users install it: a wheel built with pip holds every file of the package in the
repository; installed into a fresh virtual environment, it runs a tiny study from a directory
outside the repository (the VLM kind: it reads the most files besides modules, the CLIP model
configs).

The fresh environment sees the test environment's installed dependencies through a path file
(installing torch and Ray again would take minutes and the network), but not the repository: the
study package comes from the wheel alone, so a file the package reads that the wheel lacks fails
here (the CLIP model configs did).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--set", "train.epochs=1", "--set", "measure.bootstrap=20", "--set", "measure.permutations=20"]
STUDIES = {  # kind -> (shipped config, overrides for a tiny run)
    "vlm_dejavu": ("quickstart-vlm.yaml", ["--set", "data.num_images=300", "--set", "train.warmup_epochs=0"]),
}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", ROOT, "--no-deps", "--no-build-isolation",
                            "-w", str(tmp / "dist")], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp / "dist").glob("dejavu_study-*.whl")
    # Every file of the package in the repository is in the wheel (a data file missing from the
    # package data would fail only where a study reads it).
    tracked = subprocess.run(["git", "ls-files", "study"], cwd=ROOT, capture_output=True, text=True, check=True)
    with zipfile.ZipFile(wheel) as zf:
        shipped = {n for n in zf.namelist() if n.startswith("study/")}
    missing = set(tracked.stdout.split()) - shipped
    assert tracked.stdout.split() and not missing, sorted(missing)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   text=True).strip()
    # The dependencies, not the product: the test environment's site-packages as a plain path
    # (path files found there, such as the repository's editable install, are not processed).
    with open(os.path.join(site, "test-dependencies.pth"), "w") as fh:
        fh.write(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    work = tmp / "elsewhere"
    work.mkdir()
    for config, _ in STUDIES.values():
        shutil.copy(os.path.join(ROOT, "configs", config), work / config)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{venv / 'bin'}:{env['PATH']}", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_DATASETS_OFFLINE="1")
    return venv, work, env


def test_the_package_comes_from_the_wheel(installed):
    venv, work, env = installed
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import os, study, study.train.clip as c; "
                            "print(study.__file__); print(sorted(os.listdir(c.CONFIG_DIR)))"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    module, configs = where.stdout.splitlines()
    assert module.startswith(str(venv)) and ROOT not in module
    assert "dejavu-tiny.json" in configs


@pytest.mark.parametrize("kind", sorted(STUDIES))
def test_a_tiny_study_runs_from_the_installed_wheel(installed, kind):
    venv, work, env = installed
    config, extra = STUDIES[kind]
    run = subprocess.run([str(venv / "bin" / "dejavu"), "run", config, "--output", str(work / "runs"), *SMALL,
                          *extra], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"({kind})" in run.stdout
    assert list((work / "runs").glob(f"{config.removesuffix('.yaml')}/run-*/report/report.json"))
