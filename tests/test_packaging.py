"""The wheel built from a clean clone holds only the `arspine` package and imports correctly
from a fresh environment (no editable finder, nothing downloaded)."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
GENERIC = ("datasets", "imaging", "registration", "overlay", "navigation")


def _sh(*cmd, cwd=None, env=None, timeout=180) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd, env=env,
                       timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{r.stdout}\n{r.stderr}"
    return r


def _package_dirs(setup_cfg: Path) -> dict[str, str]:
    cfg = configparser.ConfigParser()
    cfg.read(setup_cfg)
    lines = [ln.strip() for ln in cfg["options"]["package_dir"].splitlines() if ln.strip()]
    return dict(tuple(x.strip() for x in ln.split("=")) for ln in lines)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(clean clone, wheel path)."""
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "clone"
    if (REPO / ".git").exists() and shutil.which("git"):
        _sh("git", "clone", "--quiet", "--no-hardlinks", REPO, src)
    else:  # an unpacked source tree: copy it without build products
        shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
            ".venv", "build", "dist", "*.egg-info", "__pycache__", ".git", ".cache"))
    dist = tmp / "dist"
    _sh(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--skip-dependency-check",
        "--outdir", dist, src, cwd=tmp)
    wheels = list(dist.glob("arspine-*.whl"))
    assert len(wheels) == 1, wheels
    return src, wheels[0]


def test_wheel_holds_only_the_arspine_package(built):
    src, wheel = built
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    dist_info = [t for t in tops if t.endswith(".dist-info")]
    assert len(dist_info) == 1 and dist_info[0].startswith("arspine-")
    assert tops - set(dist_info) == {"arspine"}, tops
    assert not any(n.split("/")[0] in GENERIC for n in names)
    # Every source module of every mapped folder is in the wheel, under arspine/.
    for pkg, folder in _package_dirs(src / "setup.cfg").items():
        for py in (src / folder).glob("*.py"):
            assert f"{pkg.replace('.', '/')}/{py.name}" in names, f"{folder}/{py.name} missing"
    # Every source folder with an __init__.py is a package listed in setup.cfg.
    mapped = {(src / f).resolve() for f in _package_dirs(src / "setup.cfg").values()}
    for init in src.glob("*/**/__init__.py"):
        d = init.parent.resolve()
        if "tests" in d.parts or ".venv" in d.parts:
            continue
        in_pkg = [m for m in mapped if m == d or m in d.parents]
        if in_pkg:
            rel = d.relative_to(in_pkg[0]).parts
            assert not rel or any(n.startswith("arspine/") and f"/{'/'.join(rel)}/" in n
                                  for n in names), f"subpackage {d} not in the wheel"
    entry = [n for n in names if n.endswith("entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry[0]).decode()
    assert "arspine = arspine.cli:main" in text


def test_wheel_installs_and_imports_in_a_fresh_environment(built, tmp_path, data_dir):
    _, wheel = built
    venv = tmp_path / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    _sh(base_python, "-m", "venv", "--without-pip", venv)
    py = venv / "bin" / "python"
    _sh(sys.executable, "-m", "pip", "--python", py, "install", "--quiet", "--no-deps",
        "--no-index", wheel)
    site = Path(subprocess.check_output(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
    ).strip())
    # Dependencies from the project venv, appended after the fresh site-packages. A path
    # line in a .pth does not run that folder's own .pth files, so the editable finder of
    # the project venv stays inactive.
    (site / "zz_arspine_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    script = textwrap.dedent(f"""
        import importlib, importlib.util, sys
        from pathlib import Path
        import arspine
        assert Path(arspine.__file__).resolve().is_relative_to(Path({str(site)!r}).resolve()), \\
            arspine.__file__
        assert not any("__editable__" in type(f).__module__ for f in sys.meta_path)
        for sub in ("navigation", "navigation.frames", "navigation.geometry", "imaging",
                    "registration", "overlay", "datasets", "datasets.io", "datasets.paths",
                    "cli", "commands", "viewer", "errors"):
            m = importlib.import_module("arspine." + sub)
            assert Path(m.__file__).resolve().is_relative_to(Path({str(site)!r}).resolve())
        for name in {GENERIC!r}:
            spec = importlib.util.find_spec(name)
            assert spec is None or "arspine" not in str(spec.origin), (name, spec)
        assert "PyQt5" not in sys.modules, "importing arspine pulled in PyQt5"
        from arspine.datasets.io import read_points
        c = read_points(Path({str(data_dir)!r}) / "ismr24_phantom" / "ct_frame" / "fiducials.pcd")
        assert len(c) == 6
        print("ok", arspine.__version__)
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DISPLAY")}
    r = _sh(py, "-c", script, cwd=tmp_path, env=env)
    assert r.stdout.split() == ["ok", __import__("arspine").__version__]
    cli = _sh(venv / "bin" / "arspine", "--version", cwd=tmp_path, env=env)
    assert cli.stdout.strip().startswith("arspine ")


def test_project_venv_has_no_generic_top_level_modules(tmp_path):
    """The editable install maps only `arspine`; from a neutral folder `import datasets`
    finds nothing of ours (the repo root is on sys.path only when it is the cwd)."""
    script = textwrap.dedent(f"""
        import importlib.util, arspine
        for name in {GENERIC!r}:
            spec = importlib.util.find_spec(name)
            assert spec is None or not str(spec.origin).startswith({str(REPO)!r}), spec
        import arspine.datasets, arspine.navigation
        assert arspine.datasets.__file__.startswith({str(REPO / "datasets")!r})
        print("ok")
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    assert _sh(sys.executable, "-c", script, cwd=tmp_path, env=env).stdout.strip() == "ok"


def _fake_bin(tmp_path: Path, uid: int, sudo_ok: bool) -> dict:
    """PATH with stand-ins for id / dpkg-query / sudo / apt-*: nothing installed."""
    fake = tmp_path / "bin"
    fake.mkdir()
    scripts = {"id": f"echo {uid}", "dpkg-query": "exit 1",
               "sudo": "exit 0" if sudo_ok else "exit 1",
               "apt-get": "echo apt-get \"$@\" >> \"$APT_LOG\"",
               "apt-cache": "exit 0"}
    for name, body in scripts.items():
        (fake / name).write_text(f"#!/bin/sh\n{body}\n")
        (fake / name).chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}",
               APT_LOG=str(tmp_path / "apt.log"))
    env.pop("ARSPINE_SETUP_DRY_RUN", None)
    return env


def test_setup_script_prints_the_exact_command_without_root(tmp_path):
    env = _fake_bin(tmp_path, uid=1000, sudo_ok=False)
    r = subprocess.run(["bash", str(REPO / "scripts" / "setup_system.sh"), sys.executable],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 1
    cmd = [ln for ln in r.stderr.splitlines() if "apt-get install" in ln]
    assert len(cmd) == 1
    assert cmd[0].strip().startswith("sudo apt-get update && sudo apt-get install -y")
    for pkg in ("libusb-1.0-0", "libegl1", "libgl1", "xvfb"):
        assert f" {pkg} " in cmd[0] + " "
    assert not (tmp_path / "apt.log").exists()


def test_setup_script_installs_as_root(tmp_path):
    env = _fake_bin(tmp_path, uid=0, sudo_ok=False)
    r = subprocess.run(["bash", str(REPO / "scripts" / "setup_system.sh"), sys.executable],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    log = (tmp_path / "apt.log").read_text().splitlines()
    assert log[0].startswith("apt-get update")
    assert log[1].startswith("apt-get install -y -qq --no-install-recommends libusb-1.0-0")
    assert "libegl1" in log[1] and "xvfb" in log[1]


def test_subpackages_import_without_display_or_qt(tmp_path):
    """The issue's check: every subpackage imports with no display; nothing pulls in Qt."""
    script = textwrap.dedent("""
        import sys, time
        t = time.perf_counter()
        import arspine
        assert "arspine.registration" not in sys.modules  # subpackages load on first use
        import arspine.navigation, arspine.imaging, arspine.registration, arspine.overlay
        import arspine.datasets
        assert arspine.registration is sys.modules["arspine.registration"]
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("PyQt5", "PySide6"))
        assert not bad, bad
        print("ok")
    """)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "DISPLAY", "WAYLAND_DISPLAY")}
    assert _sh(sys.executable, "-c", script, cwd=tmp_path, env=env).stdout.strip() == "ok"
