"""Weights for the benchmarks: generated once into the cache, in the official checkpoint layout."""

from __future__ import annotations

from pathlib import Path


def generated_weights(cache: Path, size: str, kind: str) -> Path:
    """The ``size`` TripoSR checkpoint of ``kind`` (see :mod:`triposr.synthetic`) in ``cache``."""
    from triposr.synthetic import write_checkpoint

    target = cache / f"triposr-{size}-{kind}"
    if not (target / "model.ckpt").exists():
        print(f"[bench] generating {size} {kind} weights in the official layout into {target}")
        write_checkpoint(target, size=size, kind=kind, seed=0)
    return target
