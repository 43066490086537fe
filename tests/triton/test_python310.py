"""The Python-backend code runs on Python 3.10, the stub of the 24.10 container.

A real 3.10 interpreter (pyenv's, on our machines) gets a fresh venv with exactly what the Triton
image installs (docker/requirements/triton.txt: numpy<2, Pillow, scikit-image); the img2mesh steps
then run end to end in it (the photo check's measures too), the band extraction gives the dense mesh with that scikit-image, the
texture baking (unwrap, rasterisation, padding) bakes a texture, and every model.py compiles. Without a 3.10 interpreter the test is skipped, saying so.
"""

import glob
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import io, py_compile, sys
import numpy as np
from PIL import Image
assert sys.version_info[:2] == (3, 10), sys.version
from img2mesh.image_decoding import decode_image
from img2mesh.background_removal import u2net_input, foreground_rgba
from img2mesh.framing import condition_image
from img2mesh.mesh_extraction import grid_points, marching_cubes, colors_to_uint8, extract_surface
from img2mesh.parameters import MeshParameters
import img2mesh.triton_model_io
image = Image.new("RGB", (64, 48), (255, 255, 255))
image.paste((200, 40, 40), (20, 10, 44, 40))
buffer = io.BytesIO(); image.save(buffer, "PNG")
rgba = decode_image(buffer.getvalue())
assert u2net_input(rgba).shape == (3, 320, 320)
mask = np.zeros((1, 320, 320), np.float32); mask[:, 80:240, 100:220] = 1
assert condition_image(foreground_rgba(rgba, mask[0]), foreground_ratio=0.85).shape == (3, 512, 512)
from img2mesh.photo_measures import PhotoMeasures, measure_photo
measures = measure_photo(rgba, mask[0])
assert measures.object_count == 1 and PhotoMeasures.from_dict(measures.to_dict()) == measures
points = grid_points(32)
vertices, faces = marching_cubes(30.0 - 40.0 * np.linalg.norm(points, axis=1), 32, 25.0)
assert len(faces) > 0
ball = lambda p: (25.0 * np.exp(10.0 * (0.25 - (p ** 2).sum(axis=1)))).astype(np.float32)
band, dense = extract_surface(ball, 96, 25.0), extract_surface(ball, 96, 25.0, extraction="dense")
assert np.array_equal(band.faces, dense.faces) and np.array_equal(band.vertices, dense.vertices)
assert band.points_evaluated < 0.5 * 96 ** 3
from img2mesh.texture_baking import bake
baked = bake(band.vertices, band.faces, lambda p: np.clip(p + 0.5, 0, 1).astype(np.float32), target_faces=2000,
             texture_size=256)
assert baked.texture.shape == (256, 256, 3) and len(baked.uvs) == len(baked.vertices) and len(baked.faces) > 1500
MeshParameters.from_request({"resolution": "64"})
for path in sys.argv[1:]:
    py_compile.compile(path, doraise=True)
print("ok")
"""


def _python310() -> str | None:
    found = shutil.which("python3.10")
    if found and subprocess.run([found, "--version"], capture_output=True).returncode == 0:
        return found
    root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates = sorted(glob.glob(f"{root}/versions/3.10*/bin/python3.10"))
    return candidates[-1] if candidates else None


def test_backend_code_runs_on_python_310(tmp_path: Path) -> None:
    python = _python310()
    if python is None:
        pytest.skip("no Python 3.10 interpreter on this machine")
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--only-binary=:all:", "-r",
         str(ROOT / "docker" / "requirements" / "triton.txt")],
        capture_output=True, text=True,
    )
    assert install.returncode == 0, install.stderr
    models = sorted(str(path) for path in (ROOT / "model_repository").glob("*/1/model.py"))
    models += [str(ROOT / "export" / name) for name in ("onnx_runner_model.py", "openvino_runner_model.py")]
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", SCRIPT, *models],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("ok")
