"""Plots: every picture is a PNG of the promised size, from tiny inputs, to a path or a BytesIO.

The pictures of the weights have their own tests beside their code: tests/mlp/test_pictures.py.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlp import MLP, pictures
from trainer import plots
from trainer.dataset_specs import DIGITS
from trainer.training import Curves

RNG = np.random.default_rng(0)
PARAMS = MLP([784, 16, 10], rng=np.random.default_rng(1)).params
CURVES = Curves(
    x_label="epoch", x=[1, 2, 3],
    train_loss=[2.0, 0.5, 0.1], val_loss=[1.8, 0.6, 0.3], test_loss=[1.9, 0.6, 0.3],
    train_accuracy=[0.5, 0.9, 0.97], val_accuracy=[0.5, 0.85, 0.95], test_accuracy=[0.5, 0.86, 0.94],
)  # fmt: skip
CONFUSION = RNG.integers(0, 20, size=(10, 10)) + np.diag(RNG.integers(800, 1100, size=10))
LEVELS = [0.0, 10.0, 25.0, 50.0]
NOISE_ACCURACY = [0.97, 0.9, 0.6, 0.2]
TABLE = np.array([[0.97, 0.9, 0.6, 0.2], [0.95, 0.94, 0.85, 0.4], [0.9, 0.9, 0.88, 0.7]])

PLOTS = {
    "accuracy": lambda out: plots.plot_accuracy(CURVES, out),
    "loss": lambda out: plots.plot_loss(CURVES, out),
    "confusion": lambda out: plots.plot_confusion(CONFUSION, DIGITS, out),
    "noise": lambda out: plots.plot_noise_curve(LEVELS, NOISE_ACCURACY, out, label="784-16-10"),
    "noise_comparison": lambda out: plots.plot_noise_comparison([0, 10, 25], LEVELS, TABLE, out),
    "w1": lambda out: pictures.plot_w1_tiles(PARAMS["w1"], out),
    "w2": lambda out: pictures.plot_digit_maps(PARAMS, out),
    "robustness": lambda out: plots.plot_robustness(
        ["clean", "light_gradient", "fonts"], [0.99, 0.0, 0.9], [0.0, 1.0, 0.02], out, 500, 0.98
    ),
}
SIZES = {"noise_comparison": plots.WIDE, "robustness": plots.TALL}


def png_size(data: bytes | Path) -> tuple[int, int]:
    """Open with Pillow, insist on a real PNG, return (width, height)."""
    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
        assert image.format == "PNG"
        image.load()  # decodes every pixel: a truncated file fails here
        return image.size


def render(draw) -> bytes:
    buffer = io.BytesIO()
    draw(buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("name", PLOTS)
def test_each_plot_is_a_png_of_the_promised_size(name: str) -> None:
    assert png_size(render(PLOTS[name])) == SIZES.get(name, pictures.SIZE)


def test_plots_write_to_a_path(tmp_path: Path) -> None:
    path = tmp_path / "loss.png"
    plots.plot_loss(CURVES, path)
    assert png_size(path) == pictures.SIZE


def test_empty_series_are_skipped_and_no_data_still_draws() -> None:
    seed_form = Curves(
        x_label="iteration", x=[100, 200, 300], train_accuracy=[0.3, 0.6, 0.8], test_accuracy=[0.3, 0.5, 0.7]
    )
    assert png_size(render(lambda out: plots.plot_accuracy(seed_form, out))) == pictures.SIZE
    assert png_size(render(lambda out: plots.plot_noise_curve([], [], out))) == pictures.SIZE


def test_accuracies_given_as_percent_are_refused() -> None:
    bad = Curves(x=[1, 2], test_accuracy=[95.0, 97.0])
    with pytest.raises(ValueError, match=r"fractions in \[0, 1\]"):
        plots.plot_accuracy(bad, io.BytesIO())
    with pytest.raises(ValueError, match=r"fractions in \[0, 1\]"):
        plots.plot_robustness(["clean"], [98.6], [0.0], io.BytesIO())


def test_robustness_bars_need_one_value_of_each_per_variant_and_draw_with_none() -> None:
    with pytest.raises(ValueError, match="one accuracy and one refused fraction per variant"):
        plots.plot_robustness(["clean", "scan"], [0.9], [0.0, 0.1], io.BytesIO())
    assert png_size(render(lambda out: plots.plot_robustness([], [], [], out))) == plots.TALL


def test_noise_comparison_refuses_a_table_of_the_wrong_shape() -> None:
    with pytest.raises(ValueError, match="expected"):
        plots.plot_noise_comparison([0, 10], LEVELS, TABLE, io.BytesIO())


def test_rendering_is_deterministic_across_threads() -> None:
    draw = PLOTS["noise"]
    first = render(draw)
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _: render(draw), range(2)))
    assert all(result == first for result in results)


def test_write_version_plots_writes_all_six_and_leaves_no_temp_files(tmp_path: Path) -> None:
    folder = tmp_path / "v0001"
    names = plots.write_version_plots(folder, CURVES, CONFUSION, DIGITS, PARAMS, LEVELS, NOISE_ACCURACY)
    assert names == list(plots.PLOT_NAMES)
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{n}.png" for n in plots.PLOT_NAMES)
    for name in names:
        assert png_size(folder / f"{name}.png") == pictures.SIZE


@pytest.mark.parametrize("draw", [plots.plot_accuracy, plots.plot_loss])
def test_the_epoch_axis_shows_whole_epochs(draw, monkeypatch: pytest.MonkeyPatch) -> None:
    """Five epochs once read 1.0, 1.5, 2.0, ...: a quarter epoch is no point of the run."""
    drawn = []
    monkeypatch.setattr(plots, "save", lambda fig, out: drawn.append(fig))
    curves = Curves(x=[1, 2, 3, 4, 5], train_accuracy=[0.9, 0.95, 0.96, 0.97, 0.98],
                    train_loss=[0.5, 0.3, 0.2, 0.15, 0.1])  # fmt: skip
    draw(curves, io.BytesIO())
    ticks = [t for t in drawn[0].axes[0].get_xticks() if 1 <= t <= 5]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
