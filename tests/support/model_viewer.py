"""GLBs shown in ``<model-viewer>`` by a real headless Chromium, screenshotted, as a shopper sees them.

* **Browser.** Debian's ``chromium`` (scripts/setup.sh installs it), driven through the DevTools
  protocol by npm's ``playwright-core``, which downloads no browser of its own. WebGL runs on
  SwiftShader, Chromium's CPU implementation, so no GPU is needed (docs/facts.md,
  "Browser tests").
* **Page.** npm's ``@google/model-viewer`` (the self-contained ``model-viewer.min.js``, three.js
  included) and the GLBs are served from a loopback HTTP server; nothing comes from a CDN. Each
  model is shown from the front (``camera-orbit="0deg 90deg"``: the camera on +Z, looking at
  the origin), without the interaction prompt, and the screenshot is taken once model-viewer
  fired ``load`` and reports the model visible.

Use the ``model_viewer`` fixture: ``model_viewer.screenshots({"name": glb_bytes, ...})`` returns
one RGBA image (numpy ``[H, W, 4]``) per GLB.
"""

from __future__ import annotations

import functools
import http.server
import io
import json
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

from tests.support.npm import ensure_npm_package

MODEL_VIEWER = ("@google/model-viewer", "4.4.0")
PLAYWRIGHT = ("playwright-core", "1.65.1")
VIEWPORT = 640
"""Width and height of the page and the screenshot, in CSS pixels (device scale 1)."""
LOAD_TIMEOUT_MS = 120_000
"""How long a model may take to load and render: SwiftShader on two busy cores is slow."""

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # the tests run as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8">
<script type="module" src="/model-viewer.min.js"></script>
<style>html, body {{ margin: 0; }}
model-viewer {{ width: {size}px; height: {size}px; --poster-color: transparent; }}</style>
</head><body>
<model-viewer src="/{name}.glb" camera-orbit="{azimuth} 90deg auto" interaction-prompt="none"
  shadow-intensity="0" loading="eager" reveal="auto"><div slot="progress-bar"></div></model-viewer>
</body></html>
"""

# Opens each page, waits for model-viewer's `load` and `modelIsVisible`, two more frames, then
# screenshots the element. argv: chromium, user data dir, args JSON, base URL, names JSON, output dir.
_DRIVER = """
const { chromium } = require(process.env.PLAYWRIGHT_CORE);
const [executablePath, userDataDir, args, base, names, out] = process.argv.slice(1);
(async () => {
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath, args: JSON.parse(args), headless: true,
    viewport: { width: %(size)d, height: %(size)d }, deviceScaleFactor: 1,
  });
  try {
    for (const name of JSON.parse(names)) {
      const page = await context.newPage();
      const problems = [];
      page.on('pageerror', (error) => problems.push(String(error)));
      await page.goto(`${base}/${name}.html`);
      await page.waitForFunction(() => {
        const viewer = document.querySelector('model-viewer');
        return viewer && viewer.loaded && viewer.modelIsVisible;
      }, null, { timeout: %(timeout)d, polling: 200 });
      await page.evaluate(() => new Promise((done) =>
        requestAnimationFrame(() => requestAnimationFrame(done))));
      if (problems.length) throw new Error(`${name}: ${problems.join('; ')}`);
      await page.locator('model-viewer').screenshot({ path: `${out}/${name}.png`, omitBackground: true });
      await page.close();
    }
  } finally {
    await context.close();
  }
})().catch((error) => { console.error(error); process.exit(2); });
"""


def chromium_executable() -> str:
    """Debian's Chromium binary (its /usr/bin/chromium is a shell wrapper around it)."""
    for candidate in ("/usr/lib/chromium/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file():
            return candidate
    raise RuntimeError("the browser tests need Debian's chromium (apt-get install chromium; scripts/setup.sh)")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map: ClassVar[dict[str, str]] = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".js": "text/javascript", ".glb": "model/gltf-binary"}

    def log_message(self, format: str, *args: object) -> None:
        pass


class ModelViewer:
    """Serves pages from a folder on loopback and screenshots them with Chromium."""

    def __init__(self, model_viewer_js: Path, playwright_core: Path) -> None:
        self.playwright_core = playwright_core
        self.folder = Path(tempfile.mkdtemp(prefix="model-viewer-"))
        shutil.copy(model_viewer_js, self.folder / "model-viewer.min.js")
        handler = functools.partial(_QuietHandler, directory=str(self.folder))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def screenshots(self, glbs: Mapping[str, bytes], azimuth: str = "0deg") -> dict[str, np.ndarray]:
        """Each GLB (by a name of letters, digits and '-') shown from the front: RGBA images.

        ``azimuth`` turns the camera about the up axis: "180deg" shows the back.
        """
        for name, glb in glbs.items():
            (self.folder / f"{name}.glb").write_bytes(glb)
            (self.folder / f"{name}.html").write_text(_PAGE.format(size=VIEWPORT, name=name, azimuth=azimuth))
        with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, \
                tempfile.TemporaryDirectory(prefix="screenshots-") as out:
            driver = _DRIVER % {"size": VIEWPORT, "timeout": LOAD_TIMEOUT_MS}
            completed = subprocess.run(
                ["node", "-e", driver, chromium_executable(), profile, json.dumps(CHROMIUM_ARGS), self.base_url,
                 json.dumps(list(glbs)), out],
                capture_output=True, text=True, check=False, timeout=60 + len(glbs) * LOAD_TIMEOUT_MS / 1000,
                env={"PATH": "/usr/bin:/bin", "HOME": profile, "PLAYWRIGHT_CORE": str(self.playwright_core)},
            )
            if completed.returncode != 0:
                raise RuntimeError(f"Chromium could not show the models:\n{completed.stdout}{completed.stderr}")
            return {name: np.asarray(Image.open(io.BytesIO((Path(out) / f"{name}.png").read_bytes())).convert("RGBA"))
                    for name in glbs}


@pytest.fixture(scope="session")
def model_viewer() -> Iterator[ModelViewer]:
    """model-viewer and playwright-core installed into the npm cache, a page server on loopback."""
    package = ensure_npm_package(*MODEL_VIEWER)
    playwright_core = ensure_npm_package(*PLAYWRIGHT)
    viewer = ModelViewer(package / "dist" / "model-viewer.min.js", playwright_core)
    yield viewer
    viewer.close()
