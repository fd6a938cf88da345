"""The package as a user gets it: an sdist and a wheel built from the
repository, the wheel installed into a fresh virtual environment outside it,
every command run from another folder.

`python -m build` makes the sdist from a copy of the working tree (what a
clone holds: tracked and untracked files that git does not ignore) and the
wheel from that sdist, so both routes are covered and nothing is written into
the repository. The install fetches the dependencies as pip does for a user
(its cache, else the registry): slow, so `make test-install` runs it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
MODEL = "flowers-hybrid-lite0"
MODEL_IN_WHEEL = f"vit_flowers/default_models/{MODEL}"
MODEL_FILES = ("config.json", "model.weights.h5", "COMMAND.md", "metrics.json", "history.csv",
               "confusion_matrix.png", "training_curves.png")
# 28 MiB measured: the shipped model (16 MB), the ImageNet CNN weights new hybrids start from (12.4 MB), the
# small model; PyPI takes 100 MB a file
MAX_WHEEL_BYTES = 35 * 1024 * 1024
# what the ignore rules of a clone leave out, for a tree without git
NOT_SOURCE = {".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis", "build", "dist", "runs", "data"}
BUILD_TIMEOUT_S = 300
INSTALL_TIMEOUT_S = 1200
COMMAND_TIMEOUT_S = 600


def _source_files(repo: Path) -> list[Path]:
    """The files a clone of `repo` with its working changes holds."""
    listed = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True)
    if listed.returncode == 0:
        names = [n for n in listed.stdout.decode().split("\0") if n]
        return [Path(n) for n in names if (repo / n).is_file()]
    return [p.relative_to(repo) for p in repo.rglob("*") if p.is_file()
            and not NOT_SOURCE & set(p.relative_to(repo).parts) and ".egg-info" not in str(p)]


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    """{'src', 'sdist', 'wheel'}: the copied tree, and the sdist and wheel built from it."""
    root = tmp_path_factory.mktemp("dists")
    src = root / "src"
    for name in _source_files(REPO):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, src / name)
    out = root / "dist"
    built = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(src)],
                           capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    sdists, wheels = list(out.glob("*.tar.gz")), list(out.glob("*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, sorted(p.name for p in out.iterdir())
    return {"src": src, "sdist": sdists[0], "wheel": wheels[0]}


def _metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(zf.read(name).decode())


def test_wheel_carries_the_default_model_and_every_module(dists):
    src, wheel = dists["src"], dists["wheel"]
    assert wheel.stat().st_size <= MAX_WHEEL_BYTES
    with zipfile.ZipFile(wheel) as zf:
        sizes = {info.filename: info.file_size for info in zf.infolist()}
        for name in MODEL_FILES:
            member = f"{MODEL_IN_WHEEL}/{name}"
            assert member in sizes, f"{member} not in the wheel"
            assert sizes[member] == (REPO / "models" / MODEL / name).stat().st_size, member
        weights = zf.read(f"{MODEL_IN_WHEEL}/model.weights.h5")
    assert hashlib.sha256(weights).digest() == hashlib.sha256((REPO / "models" / MODEL / "model.weights.h5").read_bytes()).digest()
    assert sizes[f"{MODEL_IN_WHEEL}/model.weights.h5"] > 1_000_000  # the real weights, not a pointer file
    assert "vit_flowers/default_models/README.md" in sizes
    # packages and data patterns are listed by hand in pyproject.toml: every
    # module and template under vit_flowers/ must reach the wheel
    package_files = {p.relative_to(src).as_posix() for p in (src / "vit_flowers").rglob("*") if p.is_file()}
    assert package_files and package_files <= set(sizes), sorted(package_files - set(sizes))
    assert "vit_flowers/__main__.py" in sizes and "vit_flowers/resources.py" in sizes
    assert not any(name.startswith(("models/", "tests/")) for name in sizes)


def test_sdist_holds_the_model_where_the_repository_keeps_it(dists):
    with tarfile.open(dists["sdist"]) as tf:
        names = {m.name.split("/", 1)[1] for m in tf.getmembers() if "/" in m.name}
    for name in ("pyproject.toml", "LICENSE", "README.md", f"models/{MODEL}/model.weights.h5",
                 f"models/{MODEL}/config.json", "vit_flowers/resources.py"):
        assert name in names, f"{name} not in the sdist"


def test_metadata_declares_python_licence_and_extras(dists):
    meta = _metadata(dists["wheel"])
    assert meta["License-Expression"] == "MIT"
    assert meta["Version"] == _source_version(dists["src"])
    requires_python = SpecifierSet(meta["Requires-Python"])
    assert f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}" in requires_python
    assert "3.12" not in requires_python  # vit-keras 0.2.0 installs on 3.11 at most
    assert {"dev", "jax", "export"} <= set(meta.get_all("Provides-Extra"))
    requires = [Requirement(r) for r in meta.get_all("Requires-Dist")]
    core = {canonicalize_name(r.name) for r in requires if r.marker is None}
    assert {"tensorflow", "keras", "vit-keras", "jinja2"} <= core
    for extra, needs in {"dev": {"pytest", "hypothesis", "scikit-learn", "sympy", "build"}, "jax": {"jax"},
                         "export": {"tf2onnx", "onnxruntime"}}.items():
        declared = {canonicalize_name(r.name) for r in requires if r.marker and r.marker.evaluate({"extra": extra})}
        assert needs <= declared, f"extra {extra} lacks {sorted(needs - declared)}"


def _source_version(src: Path) -> str:
    for line in (src / "vit_flowers" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    raise AssertionError("no __version__ in vit_flowers/__init__.py")


# ---------------------------------------------------------------- a fresh install, used from another folder
@pytest.fixture(scope="module")
def venv(dists, tmp_path_factory) -> Path:
    """A new virtual environment outside the repository with the wheel installed."""
    env_dir = tmp_path_factory.mktemp("venv") / "env"
    assert not env_dir.resolve().is_relative_to(REPO)
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=BUILD_TIMEOUT_S)
    python = env_dir / "bin" / "python"
    installed = subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(dists["wheel"])],
                               capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, env=_user_env(env_dir))
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    return env_dir


def _user_env(env_dir: Path) -> dict[str, str]:
    """The environment of a user whose venv is active: nothing points into the repository."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(env_dir)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["MPLBACKEND"] = "Agg"
    return env


def _run(env_dir: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    done = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                          env=_user_env(env_dir))
    assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture
def workdir(tmp_path) -> Path:
    """A folder outside the repository to run the commands from."""
    assert not tmp_path.resolve().is_relative_to(REPO)
    return tmp_path


@pytest.mark.slow
def test_installed_package_is_consistent_and_found_outside_the_repository(venv, workdir):
    python = str(venv / "bin" / "python")
    _run(venv, workdir, python, "-m", "pip", "check")
    probe = ("import json, vit_flowers, vit_flowers.model as m; from importlib.metadata import version; "
             "print(json.dumps({'package': vit_flowers.__file__, 'model': str(m.resolve_run(None)), "
             "'versions': {d: version(d) for d in ('vit-flowers', 'tensorflow', 'keras', 'vit-keras')}}))")
    found = json.loads(_run(venv, workdir, python, "-c", probe).stdout.strip().splitlines()[-1])
    site = (venv / "lib").resolve()
    assert Path(found["package"]).resolve().is_relative_to(site), found["package"]
    model = Path(found["model"]).resolve()
    assert model.is_relative_to(site), f"default model {model} is not the installed one"
    assert (model / "model.weights.h5").stat().st_size == (REPO / "models" / MODEL / "model.weights.h5").stat().st_size

    version = _run(venv, workdir, str(venv / "bin" / "vit-flowers"), "--version").stdout
    for dist, number in found["versions"].items():
        assert f"{dist} {number}" in version, f"{dist} {number} not in {version!r}"

    usage = _run(venv, workdir, python, "-m", "vit_flowers", "--help").stdout
    assert "vit-flowers" in usage
    for command in ("prepare", "train", "predict", "plot", "export", "demo"):
        assert command in usage


@pytest.mark.slow
def test_installed_commands_run_from_another_folder(venv, workdir):
    cli = str(venv / "bin" / "vit-flowers")
    demo_in_repo = REPO / "runs" / "demo" / "config.json"
    before = demo_in_repo.stat().st_mtime_ns if demo_in_repo.exists() else None

    _run(venv, workdir, cli, "prepare", "--source", "synthetic", "--out", "data", "--per-class", "2",
         "--image-size", "64")
    images = workdir / "data" / "images"
    n_images = len(list(images.rglob("*.png")) + list(images.rglob("*.jpg")))
    assert n_images == 10

    # the shipped model: no --run
    _run(venv, workdir, cli, "predict", "--images", "data/images", "--out", "pred")
    rows = (workdir / "pred" / "predictions.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + n_images
    assert "<!doctype html>" in (workdir / "pred" / "report.html").read_text()[:200].lower()
    _run(venv, workdir, cli, "plot", "--images", "data/images", "--out", "attention", "--limit", "2")
    assert (workdir / "attention" / "attention_grid.png").stat().st_size > 0
    _run(venv, workdir, cli, "export", "--out", "exported", "--format", "savedmodel")
    assert (workdir / "exported" / "saved_model" / "saved_model.pb").is_file()
    assert (workdir / "exported" / "labels.txt").read_text().split() == [
        "daisy", "dandelion", "roses", "sunflowers", "tulips"]

    # the demo's default --out is under the current folder
    _run(venv, workdir, cli, "demo", "--per-class", "10", "--epochs", "1", "--image-size", "32")
    demo = workdir / "runs" / "demo"
    config = json.loads((demo / "config.json").read_text())
    assert config["model"]["image_size"] == [32, 32]
    assert (demo / "model.weights.h5").stat().st_size > 0
    assert len((demo / "predictions" / "predictions.csv").read_text().strip().splitlines()) > 1
    after = demo_in_repo.stat().st_mtime_ns if demo_in_repo.exists() else None
    assert after == before, "the demo wrote into the repository"
