"""The robustness runner with tiny networks whose answers are known: counts, refusals, AUROC, fonts."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image, ImageDraw

from mlp import MLP
from trainer import font_digits, robustness
from trainer.robustness import auroc, pick, run_suite, variant_samples

DEJAVU = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"  # ships with matplotlib


def seven() -> np.ndarray:
    image = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(image).line([(5, 5), (21, 5), (12, 23)], fill=255, width=3)
    return np.asarray(image).reshape(784)


def always(digit: int) -> MLP:
    """A 784-10 network that answers `digit` whatever it is shown."""
    net = MLP([784, 10], init=None)
    net.params["b1"][digit] = 10
    return net


def dejavu_fonts() -> font_digits.FontSet:
    return font_digits.load_fonts({"matplotlib": (str(DEJAVU),)})


# 4 sevens and 2 blank images: a blank upload has no digit, so it is refused
DIGITS = np.stack([seven()] * 4 + [np.zeros(784, np.uint8)] * 2)
LABELS = np.array([3, 3, 5, 3, 0, 0], dtype=np.uint8)


@pytest.mark.parametrize("name", ["clean", "scan", "coloured_pen"])
def test_counts_refusals_and_both_accuracies(name):
    result = run_suite(always(3), DIGITS, LABELS, names=[name], limit=6)
    [score] = result.scores
    assert (score.name, score.n, score.correct, score.refused) == (name, 6, 3, 2)
    assert score.refusals == {"no_digit_found": 2}
    assert score.accuracy == 0.5  # refused uploads count as wrong answers
    assert score.accepted_accuracy == 0.75  # 3 of the 4 sevens carry the label 3
    assert result.separation is None and result.limit == 6


def test_a_variant_with_everything_refused_has_no_accepted_accuracy():
    blanks = np.zeros((3, 784), np.uint8)
    [score] = run_suite(always(0), blanks, np.zeros(3, np.uint8), names=["scan"], limit=3).scores
    assert (score.correct, score.refused, score.accepted_accuracy) == (0, 3, None)
    assert score.as_dict()["accepted_accuracy"] is None


def test_limit_takes_a_seeded_subset_of_the_test_digits():
    assert list(pick(10, 20, seed=0)) == list(range(10))
    a, b, c = pick(1000, 50, seed=0), pick(1000, 50, seed=0), pick(1000, 50, seed=1)
    assert len(set(a)) == 50 and list(a) == sorted(a) and (a == b).all() and not (a == c).all()
    result = run_suite(always(3), DIGITS, LABELS, names=["clean"], limit=3, seed=4)
    assert result.scores[0].n == 3 and result.limit == 3


def test_the_same_seed_gives_the_same_figures_and_samples_do_not_depend_on_the_other_variants():
    names = ["huge_margin", "specks", "faint_pencil", "tight_crop"]
    first = run_suite(always(3), DIGITS, LABELS, names=names, limit=6, seed=2).as_dict()
    again = run_suite(always(3), DIGITS, LABELS, names=names[::-1], limit=6, seed=2).as_dict()
    by_name = {v["name"]: v for v in again["variants"]}
    assert first["variants"] == [by_name[v["name"]] for v in first["variants"]]
    one = list(variant_samples("specks", DIGITS, LABELS, seed=2))
    assert one == list(variant_samples("specks", DIGITS, LABELS, seed=2))
    assert one != list(variant_samples("specks", DIGITS, LABELS, seed=3))


def test_unknown_variants_are_refused():
    with pytest.raises(ValueError, match="unknown variants nope"):
        run_suite(always(3), DIGITS, LABELS, names=["clean", "nope"])


def test_the_font_variant_renders_its_own_digits_with_their_labels():
    fonts = dejavu_fonts()
    assert [f.name for f in fonts.faces] == ["DejaVuSans"] and fonts.notes == ()
    samples = list(variant_samples("fonts", DIGITS, LABELS, seed=0, fonts=fonts))
    assert [label for _, label in samples] == [0, 1, 2, 3, 4, 5]  # the rendered digit, not MNIST's
    image = Image.open(io.BytesIO(samples[1][0]))
    g = np.asarray(image.convert("L"))
    assert image.format == "PNG" and g.shape == (160, 160) and np.median(g) > 230
    [score] = run_suite(always(3), DIGITS, LABELS, names=["fonts"], limit=6, fonts=fonts).scores
    assert (score.n, score.refused, score.correct) == (6, 0, 1)  # only the rendered 3 is read right
    assert "fonts" in score.description


def test_missing_fonts_are_skipped_with_a_note_never_an_error(tmp_path):
    not_a_font = tmp_path / "notes.ttf"
    not_a_font.write_text("not a font")
    fonts = font_digits.load_fonts(
        {
            "fonts-gone": ("/nonexistent/Gone.ttf", "/nonexistent/GoneBold.ttf"),
            "fonts-bad": (str(not_a_font),),
            "ok": (str(DEJAVU),),
        }
    )
    assert [f.name for f in fonts.faces] == ["DejaVuSans"]
    assert fonts.notes == (
        "Gone.ttf, GoneBold.ttf skipped: not installed (Debian package fonts-gone)",
        "notes.ttf skipped: not a font with the digits 0-9",
    )
    none = font_digits.load_fonts({"fonts-gone": ("/nonexistent/Gone.ttf",)})
    result = run_suite(always(3), DIGITS, LABELS, names=["clean", "fonts"], limit=6, fonts=none)
    assert [s.name for s in result.scores] == ["clean"]
    assert any("no handwriting font is installed" in note for note in result.notes)


def test_auroc_is_the_chance_a_positive_outscores_a_negative():
    assert auroc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert auroc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 0.0
    assert auroc(np.array([1.0, 1.0]), np.array([1.0])) == 0.5  # ties count half
    assert auroc(np.array([3.0, 1.0]), np.array([2.0, 0.0])) == 0.75  # 3 of the 4 pairs in order
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 20, 300).astype(float), rng.integers(5, 25, 200).astype(float)
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert auroc(pos, neg) == pytest.approx(pairs, abs=1e-12)
    with pytest.raises(ValueError):
        auroc(np.array([]), neg)


def shapes(kind: str, count: int) -> np.ndarray:
    """Upright bars (digit-like to the network below) or filled squares (not), of varied sizes."""
    out = []
    for i in range(count):
        image = Image.new("L", (28, 28), 0)
        pen = ImageDraw.Draw(image)
        if kind == "bar":
            pen.rectangle((13, 3 + i % 3, 14 + i % 2, 22), fill=255)
        else:
            pen.rectangle((4 + i % 3, 4, 22, 20 + i % 4), fill=255)
        out.append(np.asarray(image).reshape(784))
    return np.stack(out)


def test_separation_by_energy_on_data_the_network_tells_apart():
    """Class 0's score rises with ink in the centre columns and falls with ink elsewhere."""
    net = MLP([784, 10], init=None)
    centre = np.zeros((28, 28), np.float32)
    centre[:, 12:16] = 1
    net.params["w1"][:, 0] = np.where(centre.reshape(784) > 0, 0.05, -0.05)
    bars, squares = shapes("bar", 6), shapes("square", 5)
    blanks = np.zeros((2, 784), np.uint8)
    apart = robustness.separation(net, bars, np.concatenate([squares, blanks]))
    assert apart.auroc == 1.0
    assert (apart.digits, apart.digits_refused, apart.others, apart.others_refused) == (6, 0, 7, 2)
    assert robustness.separation(net, squares, bars).auroc == 0.0
    result = run_suite(net, bars, np.zeros(6, np.uint8), names=["clean"], limit=6, others=squares)
    assert result.separation is not None and result.separation.auroc == 1.0
    assert result.as_dict()["separation"]["auroc"] == 1.0


def test_as_dict_and_table_say_what_was_measured():
    progress = []
    result = run_suite(
        always(3),
        DIGITS,
        LABELS,
        names=["clean", "scan"],
        limit=6,
        others=DIGITS,
        progress=lambda name, done, of: progress.append((name, done, of)),
    )
    assert progress == [("clean", 0, 2), ("scan", 1, 2), ("separation", 2, 2)]
    record = result.as_dict()
    assert record["limit"] == 6 and record["seed"] == 0
    assert len(record["preprocessing_sha256"]) == 64
    assert [v["name"] for v in record["variants"]] == ["clean", "scan"]
    assert record["variants"][0] == {
        "name": "clean",
        "description": "The MNIST digit as it is: a 28x28 gray PNG, white ink on black.",
        "n": 6,
        "correct": 3,
        "refused": 2,
        "refusals": {"no_digit_found": 2},
        "accuracy": 0.5,
        "accepted_accuracy": 0.75,
    }
    table = robustness.format_table(result).splitlines()
    assert table[0].split()[:5] == ["variant", "n", "accuracy", "refused", "accepted"]
    assert table[1].split()[:7] == ["clean", "6", "50.0", "%", "2", "75.0", "%"]
    assert table[3].startswith("MNIST vs fashion-mnist by energy score: AUROC")


def test_make_robustness_fonts_installs_exactly_the_packages_the_suite_looks_for():
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    listed = makefile.split("ROBUSTNESS_FONTS :=", 1)[1].split("\n\n", 1)[0]
    assert sorted(listed.replace("\\", " ").split()) == sorted(font_digits.FONTS)
