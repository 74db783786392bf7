"""Follow a training job until it ends, with a live progress bar (tqdm) on stderr.

The bar shows what the job record says: its state or phase, the epoch, the share of training
steps done, the latest accuracy and the server's estimate of the time left. A job record that
carries a `phase` (training, evaluating, plotting, publishing) shows it; one without shows its state.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from tqdm import tqdm

from client.api import Api
from client.render import duration, percent

FINAL_STATES = ("succeeded", "failed", "cancelled")
POLL_S = 0.5
BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar}| {elapsed}{postfix}"  # tqdm puts ", " before a postfix


def follow(
    api: Api,
    job_id: str,
    *,
    show: bool = True,
    stream: TextIO | None = None,
    poll_s: float = POLL_S,
    pause: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll the job every `poll_s` until it ends; returns its final record."""
    with tqdm(
        total=100,
        desc="waiting",
        bar_format=BAR_FORMAT,
        file=stream or sys.stderr,
        disable=not show,
        dynamic_ncols=True,
    ) as bar:
        while True:
            record = api.job(job_id)
            draw(bar, record)
            if record["state"] in FINAL_STATES:
                return record
            pause(poll_s)


def draw(bar: tqdm, record: dict[str, Any]) -> None:
    """Move the bar to the record's progress; the text left and right of it say where the job is."""
    progress = record["progress"]
    state = record["state"]
    if state == "succeeded":
        bar.n = 100
    elif progress.get("percent") is not None:
        bar.n = min(100.0, max(0.0, float(progress["percent"])))
    training = state == "running" and bar.n < 100
    bar.set_description_str(stage_of(record), refresh=False)
    details = []
    if progress.get("epochs"):
        done, total = progress.get("epoch") or 0, progress["epochs"]
        unit = progress.get("unit") or "epoch"  # "evaluation" for a run in iterations (seed preset)
        details.append(f"{unit} {min(done + 1, total) if training else done}/{total}")
    if progress.get("test_accuracy") is not None:  # once training ended: the figure GET /models shows
        details.append(f"test accuracy {percent(progress['test_accuracy'])}")
    elif progress.get("accuracy") is not None:
        on = progress.get("accuracy_on") or "validation"  # the seed preset measures on the test set
        details.append(f"{on} accuracy {percent(progress['accuracy'])}")
    if training and progress.get("eta_seconds") is not None:
        details.append(f"ETA {duration(progress['eta_seconds'])}")
    bar.set_postfix_str(", ".join(details), refresh=False)
    bar.refresh()


def stage_of(record: dict[str, Any]) -> str:
    """The job's phase when the record has one, else its state; running at 100 % is "finishing"
    (evaluating, plotting and publishing, for a service that does not report the phase)."""
    progress, state = record["progress"], record["state"]
    if state != "running":
        return state
    if progress.get("phase"):
        return str(progress["phase"])
    return "finishing" if (progress.get("percent") or 0) >= 100 else "training"
