"""What a product photo's background-removal mask says about the photo: can TripoSR mesh it?

The one home of the photo check's measures, thresholds, problem codes and merchant-facing messages
(docs/photo-check.md explains each). It reads U²-Net's RAW first output ``d0`` (a sigmoid per cell,
320×320), never rembg's min-max normalised mask: normalising stretches the faint noise of a photo
with no product at all into a full-range "object". A photo with transparency is measured on its
own alpha instead, as the ``foreground`` model frames it (``background_removal.foreground_rgba``).
Every measure is taken on the 320×320 grid; sizes are then scaled back to the source photo's pixels.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from img2mesh.contract import U2NET_SIZE
from img2mesh.image_decoding import is_cut_out

FOREGROUND_PROBABILITY = 0.5
"""A cell is the object's when U²-Net gives it even odds or better (its output is a sigmoid)."""
UNDECIDED_LOW, UNDECIDED_HIGH = 0.1, 0.9
"""A cell between these probabilities is undecided: U²-Net can tell neither object nor background."""

MIN_FOREGROUND_SHARE = 0.0002
"""Less of the mask than this (about 20 of its 102,400 cells, a 4×5 patch) is speckle, not a product:
even a product only 40 pixels across in a 2000-pixel photo covers more."""
CUT_OFF_MIN_EDGE_SHARE = 0.01
"""The product counts as cut off on a side when its cells cover at least this share of that edge
(3 of 320 cells): a product the frame cuts crosses the edge along its width, while a single
touching cell is a resampling or shadow artefact."""
CUT_OFF_FAINT_PROBABILITY = 0.2
"""For ``cut_off``, the product is its largest part together with every cell connected to it that
U²-Net gives at least this probability: where the frame cuts a part, U²-Net often half-drops it
(scikit-image's coffee cup cropped at the bottom: the saucer's cut rim at 0.2–0.5, below the 0.5 of
the object). On the real-photo set (docs/photo-check.md) no acceptable photo's faint cells reach an
edge at 0.2; at 0.1, a retina's and a rocket's background glow would."""
SECOND_OBJECT_MIN_RATIO = 0.2
"""A separate part of the mask counts as another object when it is at least this share of the
largest part's area: detached bits of one product and stray specks are smaller, a second item of a
set is of comparable size. A pair (shoes, earrings) counts as several objects: TripoSR reconstructs
one object from one photo."""
MIN_OBJECT_SIDE_PX = 160
"""The smallest longest side, in the photo's own pixels, of a usable product. Framing scales the
product so that it fills ``FOREGROUND_RATIO`` (0.85) of the 512-pixel square the encoder sees, about
435 pixels: a smaller product is enlarged more than 2.7×, and TripoSR reads the blur as the surface."""
MAX_UNDECIDED_SHARE = 0.45
"""The most undecided cells a usable mask has, as a share of every cell U²-Net gives any chance of
being the product (above ``UNDECIDED_LOW``), so between 0 and 1. A clean edge is undecided along a
band a cell or two wide (studio shots 0.02–0.10); a cluttered but clear product more (scikit-image's
motorcycles: 0.29 and 0.32); a product that barely stands out from its background (white on white,
glass, a rocket against its launch towers: 0.61, a texture: 0.97) is undecided across much of its
area, and its mesh has holes or a halo."""

NO_OBJECT = "no_object"
CUT_OFF = "cut_off"
SEVERAL_OBJECTS = "several_objects"
TOO_SMALL = "too_small"
UNCERTAIN_MASK = "uncertain_mask"
PROBLEM_CODES = (NO_OBJECT, CUT_OFF, SEVERAL_OBJECTS, TOO_SMALL, UNCERTAIN_MASK)
"""Every problem the check reports, in the order it reports them; the codes are stable."""

SIDES = ("top", "bottom", "left", "right")
U2NET_MASK = "u2net"
ALPHA_MASK = "alpha"
"""Where the mask came from (``mask_source``): U²-Net's prediction, or the photo's own transparency."""

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class Problem:
    """One reason a photo is unusable: a stable ``code`` and what the merchant should do about it."""

    code: str
    message: str


@dataclass(frozen=True)
class PhotoMeasures:
    """The measures of one photo's mask (docs/photo-check.md) and the problems they reveal."""

    width: int
    height: int
    mask_source: str
    foreground_share: float
    """Share of the mask's cells that are the object's (any part)."""
    cut_off_sides: tuple[str, ...]
    """Sides of the photo (of ``SIDES``) the product touches: its largest part and the faint cells
    connected to it (``CUT_OFF_FAINT_PROBABILITY``)."""
    object_count: int
    """Parts of the mask at least ``SECOND_OBJECT_MIN_RATIO`` of the largest part's area (0 or more)."""
    second_object_ratio: float
    """Area of the second-largest part over the largest's, 0 to 1 (0 when there is one part)."""
    object_side_px: int
    """The longest side of the box around the objects (``object_count`` parts), in the photo's own
    pixels: what framing enlarges."""
    undecided_share: float
    """Undecided cells over the cells with any chance of being the product, 0 to 1."""
    problems: tuple[Problem, ...]

    @property
    def usable(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PhotoMeasures:
        fields = {**data, "cut_off_sides": tuple(data["cut_off_sides"]),
                  "problems": tuple(Problem(**problem) for problem in data["problems"])}
        return cls(**fields)


def measure_photo(rgba: np.ndarray, prediction: np.ndarray) -> PhotoMeasures:
    """Measure the mask TripoSR would cut ``rgba`` (``H×W×4`` uint8) out with.

    ``prediction`` is U²-Net's raw ``d0`` for the photo (any shape holding 320×320 values); it is
    ignored when the photo has transparency, whose alpha is the mask then.
    """
    height, width = rgba.shape[:2]
    if is_cut_out(rgba):
        alpha = Image.fromarray(np.ascontiguousarray(rgba[..., 3]))
        resized = alpha.resize((U2NET_SIZE, U2NET_SIZE), Image.Resampling.BILINEAR)
        probability, source = np.asarray(resized, dtype=np.float32) / 255.0, ALPHA_MASK
    else:
        probability, source = np.asarray(prediction, dtype=np.float32).reshape(U2NET_SIZE, U2NET_SIZE), U2NET_MASK
    return measure_mask(probability, width, height, source)


def measure_mask(probability: np.ndarray, width: int, height: int, source: str) -> PhotoMeasures:
    """The measures of a ``320×320`` probability mask of a ``width × height`` photo."""
    foreground = probability >= FOREGROUND_PROBABILITY
    share = float(foreground.mean())
    labels, count = ndimage.label(foreground, structure=_EIGHT_CONNECTED)
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    if share < MIN_FOREGROUND_SHARE or count == 0:
        return PhotoMeasures(width, height, source, round(share, 6), (), 0, 0.0, 0, 0.0,
                             (Problem(NO_OBJECT, "no product found against the background: use a photo that shows "
                                                 "the product on a plain background"),))
    order = np.argsort(areas)[::-1]
    largest = labels == order[0] + 1
    second_ratio = float(areas[order[1]] / areas[order[0]]) if count > 1 else 0.0
    object_ids = np.flatnonzero(areas >= SECOND_OBJECT_MIN_RATIO * areas[order[0]]) + 1
    objects = len(object_ids)
    sides = _touched_sides(_with_faint_cells(largest, probability))
    side_px = _longest_side_px(np.isin(labels, object_ids), width, height)
    undecided = (probability > UNDECIDED_LOW) & (probability < UNDECIDED_HIGH)
    undecided_share = float(undecided.sum() / (probability > UNDECIDED_LOW).sum())
    # An undecided mask's parts and sizes are U²-Net's guesses: only its uncertainty (and where
    # it is cut) is worth telling the merchant.
    uncertain = undecided_share > MAX_UNDECIDED_SHARE
    problems = []
    if sides:
        named = " and ".join(sides)
        edges = "edges" if len(sides) > 1 else "edge"
        problems.append(Problem(CUT_OFF, f"the product touches the {named} {edges} of the photo: use one that "
                                         "shows all of it"))
    # Parts that together are too small to use are one small product U²-Net split, not a set:
    # its size is the problem to name.
    if objects > 1 and side_px >= MIN_OBJECT_SIDE_PX and not uncertain:
        problems.append(Problem(SEVERAL_OBJECTS, f"the photo shows {objects} objects: use one that shows only the "
                                                 "product"))
    if side_px < MIN_OBJECT_SIDE_PX and not uncertain:
        problems.append(Problem(TOO_SMALL, f"the product is only {side_px} pixels across: use a photo in which it "
                                           f"is at least {MIN_OBJECT_SIDE_PX} pixels across"))
    if uncertain:
        problems.append(Problem(UNCERTAIN_MASK, "the product does not stand out clearly from the background: use a "
                                                "photo on a plain background of a contrasting colour"))
    return PhotoMeasures(width, height, source, round(share, 6), sides, objects, round(second_ratio, 4), side_px,
                         round(undecided_share, 4), tuple(problems))


def _with_faint_cells(part: np.ndarray, probability: np.ndarray) -> np.ndarray:
    """``part`` and every cell connected to it whose probability is at least ``CUT_OFF_FAINT_PROBABILITY``."""
    faint, _ = ndimage.label(probability >= CUT_OFF_FAINT_PROBABILITY, structure=_EIGHT_CONNECTED)
    touching = np.unique(faint[part])
    return part | np.isin(faint, touching[touching > 0])


def _touched_sides(part: np.ndarray) -> tuple[str, ...]:
    edges = {"top": part[0], "bottom": part[-1], "left": part[:, 0], "right": part[:, -1]}
    return tuple(side for side in SIDES if edges[side].mean() >= CUT_OFF_MIN_EDGE_SHARE)


def _longest_side_px(part: np.ndarray, width: int, height: int) -> int:
    rows, columns = np.nonzero(part.any(axis=1))[0], np.nonzero(part.any(axis=0))[0]
    rows_px = (rows[-1] - rows[0] + 1) * height / U2NET_SIZE
    columns_px = (columns[-1] - columns[0] + 1) * width / U2NET_SIZE
    return int(round(max(rows_px, columns_px)))

