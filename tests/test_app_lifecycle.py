"""The web app cleans up after itself: SIGTERM closes it like Ctrl-C (zip cache removed, exit 0), and a cache left
by an app that died without cleaning up (SIGKILL) is removed when the next app starts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from text3d.app.ui import remove_stale_caches

ROOT = Path(__file__).resolve().parents[1]


def test_caches_of_gone_processes_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = tmp_path / f"text3d-app-{dead.pid}-abc"
    mine = tmp_path / f"text3d-app-{os.getpid()}-def"
    other = tmp_path / "text3d-app-notes"
    for folder in (gone, mine, other):
        folder.mkdir()
        (folder / "x.zip").write_bytes(b"zip")
    assert remove_stale_caches(tmp_path) == [gone]
    assert not gone.exists() and mine.exists() and other.exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_closes_the_app_and_removes_its_zip_cache(tiny_model_dir, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    port = _free_port()
    env = {**os.environ, "TMPDIR": str(tmp), "GRADIO_ANALYTICS_ENABLED": "False"}
    cmd = [
        sys.executable,
        str(ROOT / "app.py"),
        "--model",
        str(tiny_model_dir),
        "--no-preload",
        "--port",
        str(port),
        "--out",
        str(tmp_path / "out"),
        "--device",
        "cpu",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120  # only a bound on a hang: the app normally serves in seconds
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
                assert time.monotonic() < deadline, "the app never served its page"
                time.sleep(0.5)
        assert list(tmp.glob("text3d-app-*")), "the running app has its zip cache"
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, proc.stdout.read().decode()[-2000:]
    assert not list(tmp.glob("text3d-app-*"))
