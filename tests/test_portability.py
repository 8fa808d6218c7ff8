"""The file works copied alone (python -S -I, no site-packages), and the wheel holds just the
module and its metadata, with a working console script."""

import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import streamlite
from server import ChatServer, reply_for

ROOT = pathlib.Path(__file__).resolve().parent.parent
KEY = "sk-SENTINEL-vendor-2a91"


def _env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PYTHON"))}
    env["OPENAI_API_KEY"] = KEY
    return env


def _vendored(tmp_path):
    folder = tmp_path / "vendored"
    folder.mkdir()
    shutil.copy(str(ROOT / "streamlite.py"), str(folder / "streamlite.py"))
    return folder


def test_copied_alone_streams_without_site_packages(tmp_path):
    folder = _vendored(tmp_path)
    program = (
        "import sys, streamlite\n"
        "assert 'site' not in sys.modules and streamlite.__file__.startswith(sys.argv[2])\n"
        "with streamlite.Client(sys.argv[1]).stream('hi') as s:\n"
        "    for d in s:\n"
        "        pass\n"
        "print(s.completion.content)\n"
        "print(s.completion.usage.total_tokens, streamlite.__version__)\n"
    )
    with ChatServer() as server:
        # -I leaves the script's folder off sys.path: the program puts the copy there itself
        code = "import sys; sys.path.insert(0, %r)\n" % str(folder) + program
        result = subprocess.run([sys.executable, "-S", "-I", "-c", code, server.url, str(folder)], cwd=str(folder),
                                env=_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    content, usage = result.stdout.rsplit("\n", 2)[:2]
    assert content == reply_for([])
    assert usage.split() == [usage.split()[0], streamlite.__version__] and int(usage.split()[0]) > 0


def test_copied_alone_runs_the_command_line(tmp_path):
    folder = _vendored(tmp_path)
    with ChatServer() as server:
        result = subprocess.run([sys.executable, "-S", "-I", "streamlite.py", "--base-url", server.url, "hi"],
                                cwd=str(folder), env=_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == reply_for([]) + "\n"
    assert KEY not in result.stdout + result.stderr


def test_wheel_holds_only_the_module_and_metadata_and_installs_a_console_script(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(str(ROOT), str(source), ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(wheels), str(source)], check=True, timeout=300, capture_output=True)
    (wheel,) = wheels.glob("streamlite-*.whl")
    assert wheel.name.startswith("streamlite-%s-py3-none-any" % streamlite.__version__)
    names = zipfile.ZipFile(str(wheel)).namelist()
    assert [n for n in names if not n.startswith("streamlite-%s.dist-info/" % streamlite.__version__)] == ["streamlite.py"]
    metadata = zipfile.ZipFile(str(wheel)).read("streamlite-%s.dist-info/METADATA" % streamlite.__version__).decode()
    assert "Requires-Dist" not in metadata and "License: MIT" in metadata
    entry_points = zipfile.ZipFile(str(wheel)).read("streamlite-%s.dist-info/entry_points.txt" % streamlite.__version__)
    assert b"streamlite = streamlite:_console_main" in entry_points

    # install into a fresh venv from the wheel alone, with no index
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300, capture_output=True)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = str(bin_dir / "python")
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", str(wheel)],
                   check=True, timeout=300, capture_output=True)
    with ChatServer() as server:
        for command in ([str(bin_dir / "streamlite")], [python, "-m", "streamlite"]):
            result = subprocess.run(command + ["--base-url", server.url, "hi"], cwd=str(tmp_path), env=_env(),
                                    capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr
            assert result.stdout == reply_for([]) + "\n"
    version = subprocess.run([python, "-m", "streamlite", "--version"], cwd=str(tmp_path),
                             capture_output=True, text=True, timeout=60)
    assert version.stdout.strip() == "streamlite " + streamlite.__version__


def test_licence_travels_in_the_file_header():
    head = (ROOT / "streamlite.py").read_text(encoding="utf-8")[:2000]
    assert "MIT License" in head and "THE SOFTWARE IS PROVIDED \"AS IS\"" in head
    assert "MIT License" in (ROOT / "LICENSE").read_text(encoding="utf-8")
