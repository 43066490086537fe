"""The photo check on Triton: one photo's mask measures and problems from the `photo_check` ensemble.

The ensemble stops after U²-Net, so a check costs decoding and one U²-Net pass, not a TripoSR run
(docs/photo-check.md). The request goes through `TritonMeshClient.infer`, so its errors are mapped
as the mesh call's: a photo Triton refuses is a `PermanentJobError`, an outage is transient.
"""

from __future__ import annotations

import json

from client_worker.errors import TransientJobError
from client_worker.pipeline.inference import TritonMeshClient
from img2mesh.contract import PHOTO_CHECK, PHOTO_MEASURES
from img2mesh.photo_measures import PhotoMeasures


async def check_photo(triton: TritonMeshClient, image: bytes) -> PhotoMeasures:
    """The measures and problems of one encoded photo (latest version of the ensemble)."""
    result = await triton.infer(PHOTO_CHECK, image, [PHOTO_MEASURES])
    answer = result.as_numpy(PHOTO_MEASURES)
    if answer is None:
        raise TransientJobError(f"Triton's answer lacks the output {PHOTO_MEASURES}")
    return PhotoMeasures.from_dict(json.loads(answer.reshape(-1)[0]))
