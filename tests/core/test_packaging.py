"""Each plugin is its own distribution: installing one brings the core and no other plugin."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest

PACKAGES = ["core", "plugins/vision", "plugins/nlp", "plugins/recsys", "plugins/medical"]
PLUGINS = {"vision", "nlp", "recsys", "medical"}


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    root = Path(__file__).resolve().parents[2]
    out = tmp_path_factory.mktemp("wheels")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    *(str(root / p) for p in PACKAGES)], check=True, capture_output=True)
    return out


def wheel_metadata(wheel):
    import zipfile

    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        eps = next((n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt")), None)
        return zf.read(meta).decode(), zf.read(eps).decode() if eps else ""


def test_wheels_declare_their_entry_points_and_only_core(wheels):
    names = sorted(p.name for p in wheels.iterdir())
    assert names == [f"dlguide_{n}-0.1.0-py3-none-any.whl" for n in ("core", "medical", "nlp", "recsys", "vision")]
    for plugin in PLUGINS:
        meta, eps = wheel_metadata(wheels / f"dlguide_{plugin}-0.1.0-py3-none-any.whl")
        requires = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
        assert any(r.startswith("dlguide-core") for r in requires)
        assert not any(r.startswith(f"dlguide-{other}") for r in requires for other in PLUGINS)
        assert f"[dlguide]\n{plugin} = dlguide_{plugin}.plugin" in eps
    meta, eps = wheel_metadata(wheels / "dlguide_core-0.1.0-py3-none-any.whl")
    assert "dlguide = dlguide._cli:main" in eps and "[pytest11]" in eps


@pytest.mark.slow
def test_installing_medical_resolves_core_and_no_other_plugin(wheels, tmp_path):
    report = tmp_path / "report.json"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed",
                    "--report", str(report), "--find-links", str(wheels), "dlguide-medical"],
                   check=True, capture_output=True)
    names = {item["metadata"]["name"] for item in json.loads(report.read_text())["install"]}
    assert {"dlguide-core", "dlguide-medical", "monai", "torch", "pluggy"} <= names
    assert not names & {"dlguide-vision", "dlguide-nlp", "dlguide-recsys"}


@pytest.mark.slow
def test_medical_wheel_in_a_fresh_venv_is_found_alone(wheels, tmp_path):
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    py = env / "bin" / "python"
    # The core's CLI needs only pluggy and PyYAML to list plugins; the heavy requirements are
    # shown by the resolution test above, so they are not installed here.
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheels / "dlguide_core-0.1.0-py3-none-any.whl"),
                    str(wheels / "dlguide_medical-0.1.0-py3-none-any.whl")], check=True, capture_output=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "pluggy", "pyyaml"], check=True, capture_output=True)
    res = subprocess.run([str(env / "bin" / "dlguide"), "plugins", "--json"], capture_output=True, text=True,
                         check=True)
    plugins = json.loads(res.stdout)
    assert [(p["name"], p["distribution"], p["status"]) for p in plugins] == [("medical", "dlguide-medical", "ok")]
