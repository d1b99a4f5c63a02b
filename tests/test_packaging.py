"""A non-editable install ships the tuned configs and finds them (no silent fallback to defaults)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_non_editable_install_finds_the_tuned_configs(tmp_path):
    pytest.importorskip("setuptools")  # built without isolation: no package index is needed
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard"], capture_output=True,
                            text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: cannot list the source files")
    source = tmp_path / "src"  # a copy, so the build leaves nothing in the checkout
    for name in listed.stdout.splitlines():
        if (ROOT / name).is_file() and (name.split("/")[0] in ("drl", "envs", "configs") or "/" not in name):
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                              "--no-index", "--quiet", "--target", str(target), str(source)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    code = ("import json, drl.api as a; from drl.registry import resolve_config\n"
            "cfg = a.load_config('ppo', 'HalfCheetah-v5')\n"
            "print(json.dumps({'dir': str(a.CONFIG_DIR), 'api': a.__file__, 'source': cfg.source,"
            " 'files': sorted(p.name for p in a.CONFIG_DIR.glob('ppo/*.yaml'))}))")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(found["api"]).parent == target / "drl"  # the installed copy, not the checkout
    assert Path(found["dir"]) == target / "drl" / "configs"
    assert found["files"] == sorted(p.name for p in (ROOT / "configs").glob("ppo/*.yaml"))
    assert found["source"] == f"tuned config {target / 'drl' / 'configs' / 'ppo' / 'HalfCheetah-v5.yaml'}"


def test_checkout_uses_the_top_level_configs():
    from drl.api import CONFIG_DIR

    assert CONFIG_DIR == ROOT / "configs"
