"""The `arspine` console script: help, version, exit codes (DESIGN.md), one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

import arspine
from arspine import cli
from arspine.errors import InputError, RegistrationRejected

BIN = Path(sys.executable).parent / "arspine"


def _run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ARSPINE_DEBUG"}
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env=env)


@pytest.fixture(scope="module", autouse=True)
def _console_script():
    if not BIN.exists():
        pytest.skip(f"console script not installed at {BIN}")


def test_help_lists_every_registered_command():
    r = _run("--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: arspine")
    for name, _ in cli.COMMANDS:
        assert f"\n    {name}" in r.stdout, name
    assert "Exit codes" in r.stdout
    assert "(unavailable" not in r.stdout, r.stdout
    sub = _run("info", "--help")
    assert sub.returncode == 0 and "FILE" in sub.stdout


def test_version_matches_package():
    r = _run("--version")
    assert r.returncode == 0
    assert r.stdout.strip() == f"arspine {arspine.__version__}"
    m = subprocess.run([sys.executable, "-m", "arspine", "--version"], capture_output=True,
                       text=True, timeout=60)
    assert m.returncode == 0 and m.stdout.strip() == r.stdout.strip()


def test_unknown_subcommand_exits_2_with_one_line():
    r = _run("frobnicate")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "invalid choice: 'frobnicate'" in lines[0]
    assert r.stdout == ""


def test_bad_option_exits_2_with_one_line():
    r = _run("info")
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1
    assert "arguments are required: FILE" in r.stderr


def test_input_error_in_a_command_exits_2_without_traceback(tmp_path):
    missing = tmp_path / "scan.ply"
    r = _run("info", str(missing))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines == [f"arspine info: error: {missing}: PLY file not found"]
    assert "Traceback" not in r.stderr
    broken = tmp_path / "broken.pcd"
    broken.write_bytes(b"VERSION .7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nWIDTH 5\n"
                       b"POINTS 5\nDATA binary\n\x00\x00")
    r = _run("info", str(broken))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "truncated" in r.stderr


def test_info_on_real_files(data_dir):
    r = _run("info", str(data_dir / "lumbar_ssm_mean" / "mean_L2-L5.ply"),
             str(data_dir / "ismr24_phantom" / "us_frame" / "vertebrae_clean_scaled.pcd"))
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert "65478 vertices, 130956 triangles, 4 connected components" in out[0]
    assert "point cloud, 9618 points" in out[1]


# ------------------------------------------------------------------ in-process exit codes
@pytest.fixture
def fake_command(monkeypatch):
    """Register a throw-away subcommand whose behaviour the test chooses."""
    mod = types.ModuleType("arspine.commands._fake")
    mod.HELP = "fake"
    mod.add_arguments = lambda p: p.add_argument("--mode", default="ok")
    state = {}

    def run(args):
        mode = args.mode
        if mode == "input":
            raise InputError("scan must be (N, 3), got (3, 100)")
        if mode == "rejected":
            raise RegistrationRejected("L3 inlier fraction 0.12 < 0.5")
        if mode == "crash":
            raise ZeroDivisionError("boom")
        if mode == "missing":
            open(state["missing"])
        return 0

    mod.run = run
    monkeypatch.setitem(sys.modules, "arspine.commands._fake", mod)
    monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, ("fake", "_fake")])
    monkeypatch.delenv("ARSPINE_DEBUG", raising=False)
    return state


@pytest.mark.parametrize("mode, code, text", [
    ("ok", 0, ""),
    ("input", 2, "arspine fake: error: scan must be (N, 3), got (3, 100)"),
    ("rejected", 3, "arspine fake: rejected: L3 inlier fraction 0.12 < 0.5"),
    ("crash", 1, "arspine fake: internal error: ZeroDivisionError: boom"),
])
def test_exit_codes(fake_command, capsys, mode, code, text):
    assert cli.main(["fake", "--mode", mode]) == code
    err = capsys.readouterr().err
    assert err.startswith(text)
    assert err.count("\n") == (0 if code == 0 else 1)


def test_missing_file_is_bad_input(fake_command, capsys, tmp_path):
    fake_command["missing"] = str(tmp_path / "nope.json")
    assert cli.main(["fake", "--mode", "missing"]) == 2
    assert capsys.readouterr().err.strip().endswith("nope.json")


def test_debug_env_shows_traceback(fake_command, monkeypatch):
    monkeypatch.setenv("ARSPINE_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        cli.main(["fake", "--mode", "crash"])


def test_a_broken_command_module_does_not_break_the_cli(monkeypatch, capsys):
    monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, ("ghost", "_does_not_exist")])
    assert cli.main(["ghost"]) == 1
    assert "arspine ghost cannot be loaded" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    assert "ghost" in capsys.readouterr().out


def test_no_command_prints_help_and_exits_2(capsys):
    assert cli.main([]) == 2
    assert "usage: arspine" in capsys.readouterr().out
