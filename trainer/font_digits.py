"""Digits 0-9 rendered from Debian's handwriting fonts: the robustness variant ``fonts``.

Not MNIST at all: other writers' hands, as type designers drew them, each digit at a random size,
slant and place, black on white. The fonts are Debian packages (``make robustness-fonts`` installs
them; the licences are listed in bench/README.md). Nothing rendered from them is committed or
shipped: they are rendered when the suite runs, and a font that is not installed is skipped with a
note, never an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fontTools.ttLib import TTFont, TTLibError
from PIL import Image, ImageDraw, ImageFont

from trainer.inkpaper import compose, fit, ink_box, paper, place_randomly, png, rotate

# Debian package -> its font files with digits that look written by hand. Left out on purpose:
# fonts-femkeklaver (its digits are hollow outlines) and breipfont.ttf (the same glyphs as Breip.ttf).
FONTS: dict[str, tuple[str, ...]] = {
    "fonts-dkg-handwriting": tuple(
        f"/usr/share/fonts/truetype/fifthhorseman/{name}.ttf" for name in ("dkg", "dkgBd", "dkgIt", "dkgBI")
    ),
    "fonts-breip": ("/usr/share/fonts/truetype/breip/Breip.ttf",),
    "fonts-bwht": tuple(
        f"/usr/share/fonts/opentype/bwht/BecauseWe{name}-Regular.otf"
        for name in ("Build", "Connect", "Create", "Learn", "Mentor", "Organize")
    ),
    "fonts-klee": (
        "/usr/share/fonts/truetype/klee/KleeOne-Regular.ttf",
        "/usr/share/fonts/truetype/klee/KleeOne-SemiBold.ttf",
    ),
    "fonts-sjfonts": (
        "/usr/share/fonts/truetype/sjfonts/Delphine.ttf",
        "/usr/share/fonts/truetype/sjfonts/SteveHand.ttf",
    ),
    "fonts-rufscript": ("/usr/share/fonts/truetype/rufscript/Rufscript010.ttf",),
    "fonts-humor-sans": ("/usr/share/fonts/truetype/humor-sans/Humor-Sans.ttf",),
    "fonts-kristi": ("/usr/share/fonts/truetype/kristi/Kristi.ttf",),
    "fonts-tomsontalks": ("/usr/share/fonts/truetype/tomsontalks/TomsonTalks.ttf",),
    "fonts-yusei-magic": ("/usr/share/fonts/truetype/yusei-magic/YuseiMagic-Regular.ttf",),
    "fonts-kaushanscript": ("/usr/share/fonts/opentype/kaushanscript/KaushanScript-Regular.otf",),
    "fonts-dancingscript": ("/usr/share/fonts/opentype/dancingscript/DancingScript-Regular.otf",),
}

DESCRIPTION = "Digits 0-9 in Debian's handwriting fonts, turned up to 8 degrees, 50-110 px, black on white."
RENDER_SIZE = 96  # px per em; the digit is then scaled to its random size
CANVAS = (160, 160)
DIGITS = "0123456789"


@dataclass(frozen=True)
class Face:
    """One font file, loaded, with the package it comes from."""

    package: str
    path: Path
    font: ImageFont.FreeTypeFont

    @property
    def name(self) -> str:
        return self.path.stem


@dataclass(frozen=True)
class FontSet:
    """The faces found, and a note for each one that was not (missing package, no digits, ...)."""

    faces: tuple[Face, ...]
    notes: tuple[str, ...]


def has_digits(path: Path) -> bool:
    """True when the font maps all of 0-9 to glyphs (else Pillow would draw empty boxes)."""
    try:
        # The file opened here, not by TTFont, which leaves it open when it refuses it.
        with open(path, "rb") as file, TTFont(file, lazy=True) as font:
            cmap = font.getBestCmap() or {}
    except (OSError, TTLibError):
        return False
    return all(ord(d) in cmap for d in DIGITS)


def load_fonts(catalogue: dict[str, tuple[str, ...]] = FONTS) -> FontSet:
    """Load every font file of `catalogue` that is installed and has the ten digits."""
    faces, notes = [], []
    for package, paths in catalogue.items():
        missing = [Path(name).name for name in paths if not Path(name).is_file()]
        if missing:  # one note per package: a machine without the fonts gets a short report
            notes.append(f"{', '.join(missing)} skipped: not installed (Debian package {package})")
        for path in (Path(name) for name in paths if Path(name).is_file()):
            if not has_digits(path):
                notes.append(f"{path.name} skipped: not a font with the digits 0-9")
            else:
                faces.append(Face(package, path, ImageFont.truetype(str(path), RENDER_SIZE)))
    return FontSet(tuple(faces), tuple(notes))


def glyph_coverage(face: Face, digit: int) -> np.ndarray:
    """The digit's ink as drawn by the font, float32 [0, 1], on a canvas with room to turn it."""
    side = 3 * RENDER_SIZE
    image = Image.new("L", (side, side), 0)
    ImageDraw.Draw(image).text((side / 2, side / 2), str(digit), fill=255, font=face.font, anchor="mm")
    return np.asarray(image, dtype=np.float32) / 255


def render(face: Face, digit: int, rng: np.random.Generator) -> bytes:
    """A PNG of `digit` in `face`: turned up to 8 degrees, 50-110 px tall, anywhere on a 160 px page."""
    c = ink_box(rotate(glyph_coverage(face, digit), rng.uniform(-8, 8)), 0.05)
    c = fit(c, int(rng.integers(50, 111)))
    c = place_randomly(c, CANVAS, rng, margin=4)
    return png(compose(paper(CANVAS, rng.uniform(238, 252)), c, rng.uniform(10, 60)))


def sample(fonts: FontSet, index: int, rng: np.random.Generator) -> tuple[bytes, int]:
    """Sample `index` of the suite: digit `index % 10` in the fonts taken in turn; (bytes, label)."""
    if not fonts.faces:
        raise ValueError("no handwriting font is installed (make robustness-fonts)")
    digit = index % 10
    face = fonts.faces[(index // 10) % len(fonts.faces)]
    return render(face, digit, rng), digit
