"""pip install . into a fresh virtual environment gives a working warmctl, whose completion
script is the one committed (the package carries everything it needs at run time)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_pip_install_gives_a_working_warmctl(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
         str(REPO)],
        check=True, capture_output=True, text=True,
    )
    warmctl = str(venv / "bin" / "warmctl")
    version = subprocess.run([warmctl, "--version"], check=True, capture_output=True, text=True)
    assert version.stdout.startswith("warmctl ")
    env = {"WARMCTL_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    listed = subprocess.run([warmctl, "list", "--json"], check=True, capture_output=True,
                            text=True, env=env)
    assert listed.stdout.strip() == "[]"
    script = subprocess.run([warmctl, "completion", "bash"], check=True, capture_output=True,
                            text=True)
    assert script.stdout == (REPO / "completions" / "warmctl.bash").read_text()
