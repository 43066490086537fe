"""Quality presets: the knobs a merchant may trade against speed and file size.

A preset fixes the marching-cubes grid ``resolution`` sent to Triton (cost grows with R³ for the
density grid, and the surface detail with R), the triangle budget the mesh is decimated to, and
the baked colour texture: its size in texels (sent to Triton, which bakes it) and the image
format the files store it in.

Why these numbers:

* **fast** — R = 128 (8× fewer density queries than 256) and 20 000 triangles: a preview that
  meshes in a fraction of the time and downloads as about 0.5 MB. A 512² JPEG texture (about
  50 kB): at preview sizes on a phone a product covers fewer pixels than that.
* **balanced** (TripoSR's own default resolution, 256) — 60 000 triangles, about 1.6 MB of GLB:
  the grid at 256 yields well over 100 000 triangles, more than the model's triplanes resolve, so
  quadric decimation removes mostly flat-area triangles without a visible change. A 1024² JPEG
  texture: a product filling a phone screen shows about that many texels, and JPEG keeps it
  near 100–200 kB (PNG: 0.7 MB for photo-like content).
* **quality** — R = 320, the largest grid the official demo offers (the maintainers report no gain
  above it), and 100 000 triangles: the rule of thumb commonly quoted for Shopify product media
  (docs/facts.md, "Product models for the web and AR"), about 2.6 MB, well under the 15 MB above
  which Shopify re-optimises the file. A 2048² PNG texture: lossless, for labels and fine print,
  at a few MB.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from asset.material import TextureFormat
from client_worker.errors import PermanentJobError


@dataclass(frozen=True)
class Preset:
    """A grid resolution, triangle budget and texture size (Triton's ``resolution``, ``target_faces``
    and ``texture_size`` request parameters), and the texture's file format."""

    name: str
    resolution: int
    target_faces: int
    texture_size: int
    texture_format: TextureFormat


PRESETS: Mapping[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset("fast", resolution=128, target_faces=20_000, texture_size=512, texture_format=TextureFormat.JPEG),
        Preset("balanced", resolution=256, target_faces=60_000, texture_size=1024,
               texture_format=TextureFormat.JPEG),
        Preset("quality", resolution=320, target_faces=100_000, texture_size=2048,
               texture_format=TextureFormat.PNG),
    )
}


def next_preset(preset: Preset) -> Preset | None:
    """The preset after ``preset`` in ``PRESETS`` (a finer grid, more triangles, a larger texture), or None."""
    names = list(PRESETS)
    position = names.index(preset.name) + 1
    return PRESETS[names[position]] if position < len(names) else None


def get_preset(name: str) -> Preset:
    """Look a preset up by name (case and surrounding spaces ignored).

    Raises:
        PermanentJobError: the name is not one of ``PRESETS``; the message lists the valid names.
    """
    preset = PRESETS.get(name.strip().lower())
    if preset is None:
        raise PermanentJobError(
            f"unknown quality preset {name!r}: use one of {', '.join(PRESETS)}"
        )
    return preset


def requested_preset(requested: object) -> Preset:
    """The preset a job names (``client_worker.jobs.job.Job.requested_preset`` says where).

    Raises:
        PermanentJobError: the requested value is not a string or not a preset name.
    """
    if not isinstance(requested, str):
        raise PermanentJobError(
            f"quality must be a string, got {type(requested).__name__} {requested!r}: "
            f"use one of {', '.join(PRESETS)}"
        )
    return get_preset(requested)
