"""Loading a TripoSR checkpoint (``config.yaml`` + ``model.ckpt``) from a local folder or the hub.

This is the loader for the official weights: ``model.ckpt`` is a flat state dict of fp32 tensors,
loaded with ``weights_only=True`` and matched key for key (strict). Any missing, unexpected or
mis-shaped tensor is an error that names the keys, because a partially loaded model still runs and
produces plausible-looking garbage.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from triposr.config import load_config
from triposr.system import TSR

OFFICIAL_REPO = "stabilityai/TripoSR"
CONFIG_NAME = "config.yaml"
WEIGHTS_NAME = "model.ckpt"

_HOW_TO_PROVIDE = (
    f"Pass a local directory that holds {CONFIG_NAME} and {WEIGHTS_NAME} instead (for the official "
    f"weights: `huggingface-cli download {OFFICIAL_REPO} {CONFIG_NAME} {WEIGHTS_NAME} --local-dir DIR` "
    "on a machine with hub access, then copy DIR), or generate test weights in the same format with "
    "`python -m triposr.synthetic DIR --size tiny --kind random` (random or analytic, tiny or official size)."
)


class CheckpointError(RuntimeError):
    """The checkpoint could not be found, fetched or matched to the model."""


def _names(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def _check_state_dict(model: TSR, state: Mapping[str, Tensor], source: Path) -> None:
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{name} (checkpoint {tuple(state[name].shape)}, model {expected[name]})"
        for name in set(expected) & set(state)
        if tuple(state[name].shape) != expected[name]
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_names(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {_names(mismatched)}")
    if problems:
        raise CheckpointError(
            f"{source} does not match the model built from its {CONFIG_NAME} "
            f"({len(state)} tensors in the file, {len(expected)} expected): " + "; ".join(problems)
        )


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several unrelated types for a bad file
        raise CheckpointError(f"cannot read {path} as a PyTorch state dict: {exc}") from exc
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a flat state dict of tensors (like the official {WEIGHTS_NAME})")
    return dict(state)


def load_from_files(config_path: Path, weights_path: Path, device: str | torch.device = "cpu") -> TSR:
    """Build the model from ``config_path`` and load ``weights_path`` strictly, in eval mode."""
    config = load_config(config_path)
    # Built on the meta device so that 419 M parameters are not randomly initialised only to be replaced.
    with torch.device("meta"):
        model = TSR(config)
    state = _read_state_dict(weights_path)
    _check_state_dict(model, state, weights_path)
    state = {name: t.float() if t.is_floating_point() else t for name, t in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device).eval().requires_grad_(False)


def _download(repo_id: str, cache_dir: str | Path | None) -> tuple[Path, Path]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return tuple(Path(hf_hub_download(repo_id, name, cache_dir=cache_dir)) for name in (CONFIG_NAME, WEIGHTS_NAME))
    except RepositoryNotFoundError as exc:
        raise CheckpointError(f"{repo_id!r} is neither a local directory nor a hub repository. {_HOW_TO_PROVIDE}") from exc
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise CheckpointError(
            f"could not fetch {CONFIG_NAME} and {WEIGHTS_NAME} of {repo_id!r} from the Hugging Face hub "
            f"({type(exc).__name__}: {exc}). {_HOW_TO_PROVIDE}"
        ) from exc


def load_tsr(
    name_or_path: str | Path = OFFICIAL_REPO, *, cache_dir: str | Path | None = None, device: str | torch.device = "cpu"
) -> TSR:
    """Load TripoSR from a local directory (``config.yaml`` + ``model.ckpt``) or a hub repository id."""
    path = Path(name_or_path)
    if path.is_dir():
        config_path, weights_path = path / CONFIG_NAME, path / WEIGHTS_NAME
        absent = [p.name for p in (config_path, weights_path) if not p.is_file()]
        if absent:
            raise CheckpointError(f"{path} lacks {' and '.join(absent)}. {_HOW_TO_PROVIDE}")
    elif path.exists() or path.is_absolute() or str(name_or_path).startswith(".") or str(name_or_path).count("/") != 1:
        raise CheckpointError(f"{name_or_path!s} is not a directory nor a hub repository id (owner/name). {_HOW_TO_PROVIDE}")
    else:
        config_path, weights_path = _download(str(name_or_path), cache_dir)
    return load_from_files(config_path, weights_path, device)
