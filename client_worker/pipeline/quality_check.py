"""The self-check: the asset's written files against its photo as TripoSR was given it.

The one home of the check's measures, thresholds, problem codes and merchant-facing messages, and of
the ``quality`` object the job reports (docs/quality-check.md explains each measure and threshold;
docs/webhooks.md the object). It reads the GLB back (the file ``modelUrl`` names and every web
viewer loads), so a mirror or a flipped texture that a writer put into the file shows, draws its
front view with TripoSR's camera (``asset.front_view``) and compares it with the job's cut-out at
TripoSR's framing (the ensemble's ``FRAMED_PHOTO``): the outline's IoU, also against the photo
mirrored and upside down, and the colours away from the outline; and it measures the mesh's parts and
holes (``asset.mesh_health``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.ndimage import binary_erosion

from asset.front_view import front_view, mask_box
from asset.glb import read_glb
from asset.mesh_health import mesh_health
from asset.mesh_preparation import triposr_positions
from client_worker.config import QualityCheckMode
from client_worker.errors import PermanentJobError
from img2mesh.photo_measures import Problem

QUALITY_KEY = "quality"
"""The key of the check's report in the completed (and failed) webhooks' metadata and the Celery result."""

OPAQUE = 128
"""Alpha from which a pixel of the framed cut-out is the product's (its edge is soft)."""
EDGE_MARGIN = 0.03
"""Colours are compared away from the outline, by this share of the product's larger side: there
the texels, the photo's soft edge and the mesh's side walls mix colours."""
TEXTURE_SIDE_FACTOR = 2
"""The texture is decoded with at least this many texels a side per pixel of the view's side."""

# The thresholds were set on the measures that docs/quality-check.md, "Thresholds", tabulates and explains.
MIN_SILHOUETTE_IOU = 0.85
"""Below it, the model's outline is not the product's (``outline``)."""
ORIENTATION_MARGIN = 0.02
"""The outline matches the photo mirrored (or upside down) by MIN_SILHOUETTE_IOU or more, and better
than as it is by more than this: the model is mirrored (or upside down). A symmetric product matches
both about equally."""
MAX_COLOUR_DIFFERENCE = 20.0
"""Mean |RGB| difference (0–255) on the front, away from the outline, above which the colours are
not the photo's (``colours``)."""
MAX_LOOSE_PARTS = 3
MAX_LOOSE_SHARE = 0.01
"""More loose flakes than MAX_LOOSE_PARTS, or more of the surface than MAX_LOOSE_SHARE in them
(``loose_parts``)."""
MAX_OPEN_EDGES = 0.15
"""Open edges longer in all than this share of the model's largest side: holes in the surface
(``holes``); marching cubes closes a surface, decimation leaves a little open."""

OUTLINE = "outline"
MIRRORED = "mirrored"
UPSIDE_DOWN = "upside_down"
COLOURS = "colours"
LOOSE_PARTS = "loose_parts"
HOLES = "holes"
PROBLEM_CODES = (OUTLINE, MIRRORED, UPSIDE_DOWN, COLOURS, LOOSE_PARTS, HOLES)
"""Every problem the check reports, in the order it reports them; the codes are stable."""
RETRIED_CODES = (OUTLINE,)
"""Problems a finer grid may fix (thin parts lost at a coarse one): ``review`` and ``strict`` try the
next preset once before deciding."""

OK, REVIEW, REFUSED, UNCHECKED = "ok", "review", "refused", "unchecked"
"""The verdicts (``review`` under QUALITY_CHECK=review, ``refused`` under strict: the job failed)."""


@dataclass(frozen=True)
class QualityMeasures:
    """The check's measures of one asset (docs/quality-check.md gives each one's meaning and range)."""

    silhouette_iou: float
    mirrored_iou: float
    flipped_iou: float
    outline_covered: float
    outline_excess: float
    colour_difference: float | None
    parts: int
    loose_parts: int
    loose_share: float
    open_edges: float

    @property
    def problems(self) -> list[Problem]:
        found = []
        if self.silhouette_iou < MIN_SILHOUETTE_IOU:
            if 1 - self.outline_covered >= self.outline_excess:
                message = (f"the model's outline covers {_percent(self.outline_covered)} of the product's in the "
                           "photo: a part of the product is missing")
            else:
                message = (f"the model's outline reaches beyond the product's in the photo by "
                           f"{_percent(self.outline_excess)} of its area")
            found.append(Problem(OUTLINE, message))
        if self._turned(self.mirrored_iou):
            found.append(Problem(MIRRORED, "the model is mirrored: its left and right are swapped against the photo"))
        if self._turned(self.flipped_iou):
            found.append(Problem(UPSIDE_DOWN, "the model is upside down against the photo"))
        if self.colour_difference is not None and self.colour_difference > MAX_COLOUR_DIFFERENCE:
            found.append(Problem(COLOURS, f"the model's colours differ from the photo's by "
                                          f"{self.colour_difference:.0f}/255 on average"))
        if self.loose_parts > MAX_LOOSE_PARTS or self.loose_share > MAX_LOOSE_SHARE:
            pieces = "1 loose piece floats" if self.loose_parts == 1 else f"{self.loose_parts} loose pieces float"
            share = _percent(self.loose_share, 1)
            found.append(Problem(LOOSE_PARTS, f"{pieces} beside the model ({share} of its surface)"))
        if self.open_edges > MAX_OPEN_EDGES:
            found.append(Problem(HOLES, f"the model's surface has holes: their rims add up to "
                                        f"{_percent(self.open_edges)} of its largest side"))
        return found

    def _turned(self, iou: float) -> bool:
        """Whether the outline is the photo's turned over: it matches that and the photo as it is less."""
        return iou >= MIN_SILHOUETTE_IOU and iou > self.silhouette_iou + ORIENTATION_MARGIN

    def to_dict(self) -> dict[str, Any]:
        return {name: round(value, 4) if isinstance(value, float) else value for name, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, measures: dict[str, Any]) -> QualityMeasures:
        return cls(**measures)


class Unmeasurable(Exception):
    """The photo's framed cut-out gives nothing to compare with; the message says why."""


class QualityRefused(PermanentJobError):
    """``strict``: the asset failed the check; ``report`` is the failed webhook's metadata."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


def measure_quality(glb: bytes, framed_photo: np.ndarray, world_low: np.ndarray,
                    world_high: np.ndarray) -> QualityMeasures:
    """The measures of the GLB ``glb`` against ``framed_photo`` (RGBA uint8 [S, S, 4], ``FRAMED_PHOTO``);
    ``world_low``, ``world_high``: the TripoSR-frame box of the mesh Triton returned, which places the
    file's mesh back in TripoSR's world (``asset.mesh_preparation.triposr_positions``).

    Raises:
        Unmeasurable: no pixel of the cut-out is more product than background.
    """
    size = framed_photo.shape[0]
    product = framed_photo[..., 3] >= OPAQUE
    if not product.any():
        raise Unmeasurable("the photo's cut-out has no pixel that is more product than background")
    frame = mask_box(product)
    mesh = read_glb(glb, texture_side=TEXTURE_SIDE_FACTOR * size)
    health = mesh_health(mesh.positions, mesh.triangles)
    view = front_view(triposr_positions(mesh.positions, world_low, world_high), mesh.triangles, frame, size,
                      uvs=mesh.uvs, texture=mesh.texture, colors=mesh.colors, framing=~health.loose)
    covered = view.covered
    area = product.sum()
    inside = binary_erosion(covered & product, iterations=max(1, round(EDGE_MARGIN * frame.side)))
    return QualityMeasures(
        silhouette_iou=silhouette_iou(covered, product),
        mirrored_iou=silhouette_iou(covered, _flipped(product, frame.centre[0], axis=1)),
        flipped_iou=silhouette_iou(covered, _flipped(product, frame.centre[1], axis=0)),
        outline_covered=float((covered & product).sum() / area),
        outline_excess=float((covered & ~product).sum() / area),
        colour_difference=colour_difference(view.colors, framed_photo[..., :3], inside),
        parts=health.parts,
        loose_parts=health.loose_parts,
        loose_share=health.loose_share,
        open_edges=health.open_edges,
    )


def silhouette_iou(covered: np.ndarray, product: np.ndarray) -> float:
    """Intersection over union of two masks (bool, same shape): 1 when they are the same, 0 when disjoint."""
    union = (covered | product).sum()
    return float((covered & product).sum() / union) if union else 0.0


def colour_difference(colors: np.ndarray, reference: np.ndarray, inside: np.ndarray) -> float | None:
    """Mean absolute RGB difference (0–255) of two uint8 images where ``inside``; None where nothing is."""
    if not inside.any():
        return None
    return float(np.abs(colors[inside].astype(np.float64) - reference[inside].astype(np.float64)).mean())


def quality_report(mode: QualityCheckMode, measures: QualityMeasures | None, *, unchecked: str | None = None,
                   retry: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``quality`` object of a job under ``mode``: the measures (``report``), and under ``review`` and
    ``strict`` the verdict and problems; without measures, why the asset was not checked (``unchecked``).
    ``retry``: what the check found at the preset tried first (:func:`retry_report`)."""
    report: dict[str, Any] = {"mode": mode}
    if mode == "off":
        return report
    if measures is None:
        report["unchecked"] = unchecked
        if mode != "report":
            report["verdict"] = UNCHECKED
    else:
        report["measures"] = measures.to_dict()
        if mode != "report":
            problems = measures.problems
            report["verdict"] = (REFUSED if mode == "strict" else REVIEW) if problems else OK
            report["problems"] = [asdict(problem) for problem in problems]
    if retry is not None:
        report["retry"] = retry
    return report


def retry_report(preset: str, measures: QualityMeasures, timings_ms: dict[str, float]) -> dict[str, Any]:
    """What the check found at the preset tried first, before the next one was tried, and what that run took."""
    return {"preset": preset, "measures": measures.to_dict(),
            "problems": [asdict(problem) for problem in measures.problems], "timings_ms": timings_ms}


def rejudged(report: dict[str, Any] | None, mode: QualityCheckMode) -> dict[str, Any]:
    """The ``quality`` object under ``mode`` of files copied from an earlier job, whose own object was
    ``report`` (None: made before the check existed): the same measures, judged by this job's mode."""
    earlier = report or {}
    measures = QualityMeasures.from_dict(earlier["measures"]) if "measures" in earlier else None
    unchecked = earlier.get("unchecked") or "the files are copies of an earlier job's, which did not check them"
    return quality_report(mode, measures, unchecked=unchecked, retry=earlier.get("retry"))


def worth_retrying(measures: QualityMeasures) -> bool:
    """Whether a finer grid may fix what the check found (``RETRIED_CODES``)."""
    return any(problem.code in RETRIED_CODES for problem in measures.problems)


def refusal(report: dict[str, Any]) -> QualityRefused | None:
    """The failure of a job whose ``quality`` object is ``report``: its problems under ``strict``, else None."""
    if report.get("verdict") != REFUSED:
        return None
    reasons = "; ".join(problem["message"] for problem in report["problems"])
    retried = ", also when made again at the next preset" if "retry" in report else ""
    return QualityRefused(f"the model failed its check against the photo{retried}: {reasons}", {QUALITY_KEY: report})


def _flipped(mask: np.ndarray, centre: float, axis: int) -> np.ndarray:
    """``mask`` mirrored about ``centre`` (pixel coordinates) along ``axis`` (1: left-right, 0: top-bottom),
    to the nearest pixel: where the front view would be had the model been mirrored about its own frame."""
    flipped = np.flip(mask, axis=axis)
    shift = round(2 * centre - mask.shape[axis])  # the flip took the centre to shape - centre
    shifted = np.zeros_like(mask)
    source, target = [slice(None)] * 2, [slice(None)] * 2
    source[axis] = slice(max(0, -shift), mask.shape[axis] - max(0, shift))
    target[axis] = slice(max(0, shift), mask.shape[axis] - max(0, -shift))
    shifted[tuple(target)] = flipped[tuple(source)]
    return shifted


def _percent(share: float, digits: int = 0) -> str:
    return f"{100 * share:.{digits}f} %"
