"""The toolkit installs as one package, sonar_t5, and a notebook anywhere translates with it."""
import json
import os
import shutil
import subprocess
import venv

import pytest

from .conftest import ROOT

NOTEBOOK = """
import importlib.resources, importlib.util, json, sys
import numpy as np
from sonar_t5 import load_translator
translator = load_translator(sys.argv[1], device="cpu")
arrays = [np.load(path) for path in sys.argv[2:]]
print(json.dumps({"translations": translator.translate(arrays, batch_size=4),
                  "package": __import__("sonar_t5").__file__,
                  "page_template": importlib.resources.files("sonar_t5.evaluation.analysis")
                  .joinpath("report.html.j2").is_file(),
                  "generic_names": [n for n in ("common", "data", "models", "evaluation",
                                                "training") if importlib.util.find_spec(n)]}))
"""


@pytest.mark.slow
def test_a_fresh_venv_installs_the_checkout_and_translates_from_another_directory(
        tiny_run, tiny_data, tmp_path):
    # What pip builds from: the checkout's package files (a copy: the build writes beside them)
    source = tmp_path / "checkout"
    shutil.copytree(ROOT / "sonar_t5", source / "sonar_t5",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "requirements.txt", "README.md"):
        shutil.copy(ROOT / name, source / name)
    # A new environment; no network here, so the dependencies (torch...) come from this
    # interpreter's site-packages and pip builds with its setuptools.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=False)
    python = str(env_dir / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", str(source)], check=True, env=env,
                   capture_output=True)

    run, _ = tiny_run
    rows = [line.split("\t") for line in (run / "results" / "test" / "translations.txt")
            .read_text().splitlines()[1:7]]
    notebook = tmp_path / "notebook"
    notebook.mkdir()
    result = subprocess.run(
        [python, "-c", NOTEBOOK, str(run / "best_model.pt"),
         *[str(tiny_data / "features" / "test" / f"{row[0]}.npy") for row in rows]],
        cwd=notebook, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.splitlines()[-1])
    # the installed copy, not the checkout, and no generic top-level names claimed
    assert found["package"].startswith(str(env_dir)) and found["generic_names"] == []
    assert found["page_template"]  # package data: the analysis report's template ships too
    # the same translations as the end-of-training scoring wrote (the same default decoding)
    assert found["translations"] == [row[2] if len(row) > 2 else "" for row in rows]
