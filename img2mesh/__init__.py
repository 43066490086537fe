"""The non-network steps of photo → mesh: decoding, rembg pre/post-processing, framing, meshing."""

from img2mesh.telemetry import switch_off_telemetry

# Before any module of ours can import ONNX Runtime: its telemetry is decided when it initialises.
switch_off_telemetry()
