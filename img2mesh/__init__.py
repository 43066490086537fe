"""The non-network steps of photo → mesh: decoding, rembg pre/post-processing, framing, meshing."""
