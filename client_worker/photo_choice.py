"""Which of a job's photos to mesh: download the candidates, check each on Triton, choose the best.

`PHOTO_CHECK` says what happens (docs/photo-check.md; the webhook's report in docs/webhooks.md,
"Photo choice"): `strict` meshes the best usable candidate and refuses the job, naming each photo
and its problem, when none is usable; `warn` meshes the best candidate anyway and reports its
problems; `off` meshes the first image that downloads, unchecked, as before the check existed.
The first `PHOTO_CANDIDATES` URLs are downloaded together, within the download deadline, and
checked together (Triton batches them); a candidate that fails to download or that Triton refuses
only drops out. Best is: fewest problems, then the largest product (what framing has to enlarge
least), then the most certain mask, then the job's own order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from client_worker.config import PhotoCheckMode, Settings
from client_worker.download import (
    DownloadedImage,
    DownloadLimits,
    download_each,
    download_first_image,
    no_usable_image,
    shown_url,
)
from client_worker.errors import JobError, PermanentJobError, TransientJobError
from client_worker.pipeline.photo_to_asset import StageListener, timed_stage
from client_worker.pipeline.inference import TritonMeshClient
from client_worker.pipeline.photo_check import check_photo
from client_worker.pipeline.stages import Stage
from img2mesh.contract import PHOTO_CHECK
from img2mesh.photo_measures import PhotoMeasures

REPORT_KEY = "photo_choice"
"""The key of the photo choice's report in the completed and failed webhooks' metadata."""


@dataclass(frozen=True)
class CheckedPhoto:
    """One candidate (``url``: its URL or file): its encoded image and measures, or why it has none
    (``failure``: its download, or Triton refused it)."""

    url: str
    data: bytes | None
    measures: PhotoMeasures | None
    failure: JobError | None = None

    @property
    def usable(self) -> bool:
        return self.measures is not None and self.measures.usable

    def problems_text(self) -> str:
        """What is wrong with this photo, for the merchant."""
        if self.measures is None:
            return str(self.failure)
        return "; ".join(problem.message for problem in self.measures.problems)

    def report(self) -> dict[str, Any]:
        """The candidate in the webhook's metadata: its measures and problems, or its error."""
        if self.measures is None:
            return {"url": self.url, "error": str(self.failure)}
        measures = self.measures.to_dict()
        problems = measures.pop("problems")
        return {"url": self.url, "measures": measures, "problems": problems}


@dataclass(frozen=True)
class ChosenPhoto:
    """The photo to mesh, and the report for the job's metadata (``{REPORT_KEY: …}``)."""

    url: str
    data: bytes
    report: dict[str, Any]


class PhotoRefused(PermanentJobError):
    """No candidate can be meshed (``strict``: none is usable; ``warn``: none could be checked);
    ``report`` is the failed webhook's metadata."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


def ranked(photos: Sequence[CheckedPhoto]) -> list[CheckedPhoto]:
    """The checked photos, best first (the module's docstring says what best is)."""
    measured = [photo for photo in photos if photo.measures is not None]
    return sorted(measured, key=lambda photo: (len(photo.measures.problems), -photo.measures.object_side_px,
                                               photo.measures.undecided_share))


def chosen_photo(photos: Sequence[CheckedPhoto], mode: PhotoCheckMode) -> CheckedPhoto | None:
    """The photo ``mode`` meshes among ``photos`` (checked or, with ``off``, only loaded), or None."""
    if mode == "off":
        return next((photo for photo in photos if photo.data is not None), None)
    best = ranked(photos)
    if not best or (mode == "strict" and not best[0].usable):
        return None
    return best[0]


def report(photos: Sequence[CheckedPhoto], mode: PhotoCheckMode, chosen: CheckedPhoto | None) -> dict[str, Any]:
    """The photo choice as the webhooks' metadata reports it (docs/webhooks.md, "Photo choice")."""
    described: dict[str, Any] = {"mode": mode, "candidates": [photo.report() for photo in photos]}
    if chosen is not None:
        described["chosen"] = chosen.url
    return {REPORT_KEY: described}


def refusal(photos: Sequence[CheckedPhoto], unchecked: int) -> str:
    """Why none of ``photos`` can be meshed, naming each photo and its problem; ``unchecked``: how many
    more URLs the job has."""
    if len(photos) == 1:
        message = f"photo {shown_url(photos[0].url)}: {photos[0].problems_text()}"
    else:
        listed = "; ".join(f"{index}) {shown_url(photo.url)}: {photo.problems_text()}"
                           for index, photo in enumerate(photos, 1))
        message = f"none of the {len(photos)} photos can be used: {listed}"
    if unchecked:
        message += f"; the other {unchecked} URLs were not checked (at most {len(photos)} are, PHOTO_CANDIDATES)"
    return message


class PhotoChoice:
    """Chooses each job's photo; shared by all concurrent jobs of a worker (it holds no per-job state)."""

    def __init__(self, mode: PhotoCheckMode, candidates: int, triton: TritonMeshClient, limits: DownloadLimits,
                 http: httpx.AsyncClient) -> None:
        self.mode = mode
        self.candidates = candidates
        self.triton = triton
        self.limits = limits
        self.http = http

    @classmethod
    def from_settings(cls, settings: Settings, triton: TritonMeshClient, http: httpx.AsyncClient) -> PhotoChoice:
        """``PHOTO_CHECK``, ``PHOTO_CANDIDATES`` and the ``DOWNLOAD_*`` limits."""
        return cls(settings.photo_check, settings.photo_candidates, triton, DownloadLimits.from_settings(settings), http)

    async def wait_ready(self, timeout_s: float) -> None:
        """Wait until Triton serves the photo check, when it is on: a repository exported before the
        check existed lacks it, and the worker should say so at start-up rather than fail each job."""
        if self.mode != "off":
            await self.triton.wait_ready(timeout_s, model_name=PHOTO_CHECK)

    async def choose(self, urls: Sequence[str], listener: StageListener, timings_ms: dict[str, float],
                     mode: PhotoCheckMode | None = None) -> ChosenPhoto:
        """The photo to mesh among ``urls``; times and announces the ``download`` and ``check`` stages.
        ``mode``: the job's own `photo_check_mode`, instead of ``PHOTO_CHECK``.

        Raises:
            PhotoRefused: no candidate can be meshed (``strict``: none is usable).
            PermanentJobError, TransientJobError: no candidate downloaded (as ``download_first_image``),
                or Triton failed (``TritonUnavailable`` when it is down).
        """
        mode = mode or self.mode
        if mode == "off" or not urls:  # without URLs, download_first_image's error says so
            async with timed_stage(Stage.DOWNLOAD, timings_ms, listener):
                image = await download_first_image(urls, self.limits, self.http)
            return ChosenPhoto(image.url, image.data, {REPORT_KEY: {"mode": mode}})
        candidates = list(urls[: self.candidates])
        async with timed_stage(Stage.DOWNLOAD, timings_ms, listener):
            downloads = await download_each(candidates, self.limits, self.http)
        failures = [(url, got) for url, got in zip(candidates, downloads) if isinstance(got, JobError)]
        if len(failures) == len(candidates):
            raise no_usable_image(urls, candidates, failures, self.limits, (self.candidates, "PHOTO_CANDIDATES"))
        loaded = [got.data if isinstance(got, DownloadedImage) else got for got in downloads]
        async with timed_stage(Stage.CHECK, timings_ms, listener):
            photos = await self.check_all(list(zip(candidates, loaded)))
        chosen = chosen_photo(photos, mode)
        if chosen is None or chosen.data is None:
            message = refusal(photos, len(urls) - len(photos))
            if any(isinstance(photo.failure, TransientJobError) for photo in photos):
                raise TransientJobError(message)  # a candidate that could not be fetched now may be the usable one
            raise PhotoRefused(message, report(photos, mode, None))
        return ChosenPhoto(chosen.url, chosen.data, report(photos, mode, chosen))

    async def check_all(self, photos: Sequence[tuple[str, bytes | JobError]]) -> list[CheckedPhoto]:
        """Check every loaded photo at once (Triton batches them); a failure to load stays the photo's."""
        return list(await asyncio.gather(*(self._checked(name, got) for name, got in photos)))

    async def _checked(self, name: str, got: bytes | JobError) -> CheckedPhoto:
        if isinstance(got, JobError):
            return CheckedPhoto(name, None, None, got)
        try:
            return CheckedPhoto(name, got, await check_photo(self.triton, got))
        except PermanentJobError as refused:  # Triton refused this photo only
            return CheckedPhoto(name, got, None, refused)
