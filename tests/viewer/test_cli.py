"""``python -m viewer`` / ``python -m inference.view`` / ``scripts/view.sh`` from the command line: one ``error:``
line and exit 2 for a folder without fields or geometry, a port in use, no viser; a recording written."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

from tests.conftest import REPO_ROOT
from tests.limits import HANG_GUARD_S
from tests.reliability.conftest import assert_clean_error


def run(*args, pythonpath_first=None, timeout=HANG_GUARD_S) -> subprocess.CompletedProcess:
    path = [str(pythonpath_first)] if pythonpath_first else []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*path, str(REPO_ROOT)]), TQDM_DISABLE="1")
    env.pop("LANGVGGT4D_DEBUG", None)
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_folder_without_fields_or_geometry(tmp_path, viewer_output):
    empty = tmp_path / "empty"
    empty.mkdir()
    line = assert_clean_error(run("-m", "viewer", "--fields", empty, "--hash-text"), mentions=empty)
    assert "no fields" in line
    only_fields = tmp_path / "fields_only"
    shutil.copytree(viewer_output["out"] / "fields", only_fields / "fields")
    line = assert_clean_error(run("-m", "viewer", "--fields", only_fields, "--hash-text"), mentions=only_fields)
    assert "no geometry" in line and "--backbone" in line


def test_truncated_meta_json_is_named(tmp_path, viewer_output):
    out = tmp_path / "out"
    shutil.copytree(viewer_output["out"], out)
    (out / "meta.json").write_text('{"frames": ["000001", ')
    line = assert_clean_error(run("-m", "viewer", "--fields", out, "--hash-text", "--port", "0"),
                              mentions=out / "meta.json")
    assert line.startswith("error: not valid JSON (")


def test_port_in_use(viewer_output):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        line = assert_clean_error(run("-m", "viewer", "--fields", viewer_output["out"], "--hash-text",
                                      "--port", port), mentions=f"127.0.0.1:{port}")
    assert "in use" in line and "--port" in line


def test_no_viser_installed(tmp_path, viewer_output):
    (tmp_path / "viser.py").write_text("raise ImportError(\"No module named 'viser'\")\n")
    line = assert_clean_error(run("-m", "viewer", "--fields", viewer_output["out"], "--hash-text",
                                  pythonpath_first=tmp_path))
    assert "viser" in line and "pip install" in line


def test_inference_view_launcher_records(tmp_path, viewer_output):
    """``python -m inference.view`` runs the viewer; ``--record x.html`` writes one standalone page and exits."""
    page = tmp_path / "rec.html"
    r = run("-m", "inference.view", "--fields", viewer_output["out"], "--hash-text", "--text", "red ball",
            "--record", page, "-q")
    assert r.returncode == 0, r.stderr[-3000:]
    assert page.is_file() and "__VISER_EMBED_DATA__" in page.read_text()
    assert "recording written" in r.stdout
    help_text = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "view.sh"), "--help"], capture_output=True,
                               text=True, timeout=HANG_GUARD_S)
    assert help_text.returncode == 0 and "python -m viewer" in help_text.stdout
