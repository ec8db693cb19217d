"""Headless Chromium for the report tests, and the evaluation report of a real (small) run.

Also the command that re-takes the README's screenshot of the report:

    HF_HUB_OFFLINE=1 .venv/bin/python -m tests.browser docs/images/evaluation-report.png

(fine-tunes the packaged MiniLM for a few steps on scifact-mini with texts cut to 40 words, evaluates base
vs tuned on the test labels, renders the report with Debian's chromium and keeps the top of the page).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

#: Flags that keep Chromium from reaching the network or a desktop: it only opens the local file.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)


def chromium() -> str | None:
    """The Chromium executable (Debian's `chromium` package), or None."""
    return next((found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None)


def run_chromium(page: Path, profile: Path, *args: str, timeout: float = 90) -> str:
    """Opens `page` in headless Chromium with `args` (`--dump-dom`, `--screenshot=...`); returns stdout."""
    executable = chromium()
    if executable is None:
        raise FileNotFoundError("chromium is not installed (apt-get install chromium)")
    done = subprocess.run(
        [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "HOME": str(profile)},  # Chromium writes its crash and config files there
    )
    if done.returncode != 0:
        raise RuntimeError(f"chromium exited with {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def evaluation_report_of_a_run(folder: Path, *, train_steps: int = 4):
    """Fine-tunes the packaged model for `train_steps` steps and evaluates base vs tuned: a real report.

    Returns:
        (the report's path, the evaluations [base, tuned]).
    """
    from embedpipe.evaluate import EvaluationOutputs, run_evaluation
    from embedpipe.fine_tune import fine_tune
    from tests.conftest import prepare_short_scifact_mini

    paths = prepare_short_scifact_mini(folder / "prepared")
    # A high learning rate for a few steps: queries move both ways, so both query tables have rows.
    fine_tune(
        **paths,
        output_dir=str(folder / "tuned"),
        train_steps=train_steps,
        batch_size=16,
        learning_rate_multiplier=20,
        max_seq_length=64,
        seed=0,
    )
    report = folder / "evaluation" / "report.html"
    evaluations, _, _ = run_evaluation(
        paths["corpus_path"],
        paths["queries_path"],
        str(folder / "prepared" / "test_labels.parquet"),
        tuned_model=str(folder / "tuned"),
        batch_size=64,
        outputs=EvaluationOutputs(report=str(report)),
    )
    return report, evaluations


def screenshot(page: Path, png: Path, profile: Path, *, width: int = 1000, height: int = 1250) -> None:
    """The top `width` x `height` pixels of the rendered page, as a palette PNG (small enough for a README)."""
    from PIL import Image

    raw = png.with_suffix(".raw.png")
    run_chromium(page, profile, f"--screenshot={raw}", f"--window-size={width},{height}")
    Image.open(raw).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(png, optimize=True)
    raw.unlink()


if __name__ == "__main__":
    import tempfile

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images/evaluation-report.png")
    with tempfile.TemporaryDirectory() as tmp:
        report, _ = evaluation_report_of_a_run(Path(tmp))
        screenshot(report, target.resolve(), Path(tmp) / "chromium")
    print(f"{target}: {target.stat().st_size:,} bytes")
