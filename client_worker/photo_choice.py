"""Which of a job's photos to mesh: download the candidates, check each on Triton, choose the best.

`PHOTO_CHECK` says what happens (docs/photo-check.md; the webhook's report in docs/webhooks.md,
"Photo choice"): `strict` meshes the best usable candidate and refuses the job, naming each photo
and its problem, when none is usable; `warn` meshes the best candidate anyway and reports its
problems; `off` meshes the first image that downloads, unchecked, as before the check existed.

The rule: the URLs are tried in their order, all of them if need be (intake refuses a job with more
than `IMAGE_URLS_MAX`), until `PHOTO_CANDIDATES` *usable* photos are found; the best of the photos
checked is meshed. They go in rounds: as many URLs as usable photos are still wanted are downloaded
together, within the job's one download deadline (`DOWNLOAD_JOB_TIMEOUT_S`), and checked together
(Triton batches them); a URL that fails to download or that Triton refuses only drops out. So a
job whose first four URLs are dead and whose fifth is good is meshed from the fifth, and a job of
good photos costs `PHOTO_CANDIDATES` checks. Best is: fewest problems, then the largest product
(what framing has to enlarge least), then the most certain mask, then the job's own order.
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


def refusal(photos: Sequence[CheckedPhoto], unchecked: int, limits: DownloadLimits) -> str:
    """Why none of ``photos`` can be meshed, naming each photo and its problem; ``unchecked``: how many
    more URLs the job has, which the download deadline left unchecked."""
    if len(photos) == 1:
        message = f"photo {shown_url(photos[0].url)}: {photos[0].problems_text()}"
    else:
        listed = "; ".join(f"{index}) {shown_url(photo.url)}: {photo.problems_text()}"
                           for index, photo in enumerate(photos, 1))
        message = f"none of the {len(photos)} photos can be used: {listed}"
    if unchecked:
        message += (f"; the downloads of this job took longer than {limits.job_timeout_s:g} s in all "
                    f"(DOWNLOAD_JOB_TIMEOUT_S), so the other {unchecked} URLs were not checked")
    return message


@dataclass(frozen=True)
class _Unannounced:
    """A stage listener that records durations but announces no stage (a later round's)."""

    listener: StageListener

    async def started(self, stage: Stage) -> None:
        """Not announced again."""

    def finished(self, stage: Stage, seconds: float) -> None:
        self.listener.finished(stage, seconds)


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
        urls = list(urls[: self.limits.max_urls])  # intake refuses more; any other caller is bounded here
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.job_timeout_s
        photos: list[CheckedPhoto] = []
        announce: StageListener = listener
        while len(photos) < len(urls) and loop.time() < deadline:
            wanted = self.candidates - sum(photo.usable for photo in photos)
            if wanted <= 0:
                break
            round_ms: dict[str, float] = {}
            batch = urls[len(photos): len(photos) + wanted]
            async with timed_stage(Stage.DOWNLOAD, round_ms, announce):
                downloads = await download_each(batch, self.limits, self.http, deadline)
            loaded = [got.data if isinstance(got, DownloadedImage) else got for got in downloads]
            if any(isinstance(got, bytes) for got in loaded):
                async with timed_stage(Stage.CHECK, round_ms, announce):
                    photos += await self.check_all(list(zip(batch, loaded)))
            else:
                photos += await self.check_all(list(zip(batch, loaded)))  # only failures: nothing to check
            for stage, ms in round_ms.items():
                timings_ms[stage] = round(timings_ms.get(stage, 0.0) + ms, 1)
            announce = _Unannounced(listener)  # later rounds repeat stages the backend has heard of
        if all(photo.data is None for photo in photos):
            failures = [(photo.url, photo.failure) for photo in photos if photo.failure is not None]
            raise no_usable_image(urls, urls, failures, self.limits)
        chosen = chosen_photo(photos, mode)
        if chosen is None or chosen.data is None:
            unchecked = len(urls) - len(photos)
            message = refusal(photos, unchecked, self.limits)
            if unchecked or any(isinstance(photo.failure, TransientJobError) for photo in photos):
                raise TransientJobError(message)  # a photo that could not be fetched now may be the usable one
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
