"""``bash scripts/demo.sh --quick``: the whole chain (synthetic scene -> tokens -> oracle targets -> autoencoders ->
training -> inference -> evaluation) on a very small configuration, without weights (tiny random backbone, hash
text encoder).

Checks that the metrics table is printed, that the summary JSON holds the model, oracle and trivial-baseline
rows, that the trained decoder beats the trivial baseline on the held-out annotated frames (time-agnostic
mIoU), that both autoencoders keep the classes apart after decoding, and that a second run reuses every step.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO_ROOT
from tests.limits import HANG_GUARD_S

pytestmark = pytest.mark.slow


def _run(out, *extra):
    env = dict(os.environ, PYTHON=sys.executable, DEVICE="cpu", THREADS="1")
    return subprocess.run(["bash", str(REPO_ROOT / "scripts" / "demo.sh"), "--quick", "--out", str(out), *extra],
                          env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_demo_quick_beats_trivial_and_resumes(tmp_path):
    out = tmp_path / "demo"
    r = _run(out)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    text = r.stdout
    assert "| fields | mIoU | mAcc | Acc | vIoU |" in text and "trained decoder" in text
    assert "tiny RANDOM StreamVGGT" in text or "official weights" in text  # says which backbone it used
    s = json.loads((out / "demo_summary.json").read_text())
    model, trivial, oracle = s["model"], s["trivial"], s["oracle_targets"]
    for row in (model, oracle):
        assert {"miou", "macc", "acc", "viou"} <= set(row)
    print(f"\nquick demo: model {model}\n  oracle {oracle}\n  trivial {trivial}")
    assert oracle["miou"] > model["miou"] - 0.05  # the targets themselves are the upper bound (up to noise)
    assert model["miou"] > trivial["miou"] + 0.2, (model, trivial)
    assert model["macc"] > trivial["macc"], (model, trivial)
    assert all(v["separated"] for v in s["autoencoders"].values()), s["autoencoders"]
    assert (out / "inference" / "fields").is_dir() and (out / "eval" / "results.md").is_file()
    # issue 26: one geometry row per backbone family (geometry only), random tiny ones labelled as baselines
    assert "Every geometry backbone on the same world" in text
    rows = s["backbones"]
    assert list(rows) == ["streamvggt", "vggt", "page4d", "page4d-mask"], rows
    for fam, row in rows.items():
        assert row["backbone"].startswith("tiny" if fam == "streamvggt" else fam + "-") or not row["random_weights"]
        assert all(np.isfinite(row[k]) for k in ("abs_rel", "delta_1", "ate", "rpe_trans", "rpe_rot")), (fam, row)
    if any(r["random_weights"] for r in rows.values()):
        assert "RANDOM tiny: a pipeline baseline" in text
    assert not (out / "backbones" / "vggt" / "fields").exists()
    # issue 5: on the synthetic scene with the tiny backbone and a tiny decoder, the feature loss (mean over the
    # first epoch vs the last) falls at least 10x within a few hundred steps (measured on the 3D world: 13.6x in
    # 400 steps; the 2-D sprites needed 240)
    state = json.loads(next((out / "run").glob("checkpoint_epoch_*/state.json")).read_text())
    first, last = state["history"][0]["train_lang"], state["history"][-1]["train_lang"]
    print(f"  feature loss {first:.4f} -> {last:.4f} ({first / last:.1f}x) in {state['global_step']} steps")
    assert state["global_step"] <= 400 and last < first / 10, (first, last)

    again = _run(out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done before, reused") >= 8
    assert json.loads((out / "demo_summary.json").read_text())["model"] == model


def test_readme_pictures_come_from_the_script():
    """Every picture the README shows was written by scripts/readme_pictures.py (its PNG text chunk says so), not
    made by hand; the script's own stamp is what the test reads."""
    import re

    from PIL import Image

    from scripts.readme_pictures import SOURCE_KEY, SOURCE_TEXT

    readme = (REPO_ROOT / "README.md").read_text()
    pictures = re.findall(r"!\[[^\]]*\]\((docs/images/[^)]+\.png)\)", readme)
    assert {"docs/images/demo_queries.png", "docs/images/viewer.png"} <= set(pictures)
    for rel in pictures:
        with Image.open(REPO_ROOT / rel) as im:
            assert SOURCE_TEXT in im.info.get(SOURCE_KEY, ""), f"{rel} was not written by scripts/readme_pictures.py"
