"""The Node.js Celery clients the backend may use as producers: npm `celery-node` and `celery-ts`.

They are installed once with npm into the same cache as the glTF validator
(``$PHOTO_TO_3D_NPM_CACHE``, default ``~/.cache/photo-to-3d/npm``) and driven through a small
script: ``NodeCelery.send(...)`` sends one task exactly as the package does and, when asked,
waits for its result from the Redis result backend.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.npm import ensure_npm_package, npm_cache_dir

PACKAGES = {"celery-node": "0.5.9", "celery-ts": "1.2.3"}

# argv[1]: the folder of node_modules, argv[2]: the JSON request. Prints one JSON line:
# {"task_id"} right after sending, then {"result"} or {"error"} when waiting for the result.
_SEND = """
const [modules, request] = [process.argv[1], JSON.parse(process.argv[2])];
const print = (value) => process.stdout.write(JSON.stringify(value) + "\\n");
async function main() {
  if (request.client === "celery-node") {
    const celery = require(modules + "/celery-node");
    const client = celery.createClient(request.broker, request.backend || request.broker, request.queue || "celery");
    const result = client.createTask(request.task).applyAsync(request.args, request.kwargs);
    print({task_id: result.taskId});
    if (request.wait_s) {
      try { print({result: await result.get(request.wait_s * 1000)}); }
      catch (error) { print({error: String(error.message), status: error.status}); }
    } else {
      await new Promise((done) => setTimeout(done, 500));  // publish() runs after the connection is ready
    }
    await client.disconnect();
  } else {
    const ts = require(modules + "/celery-ts");
    const client = ts.createClient({brokerUrl: request.broker, resultBackend: request.backend || request.broker});
    const options = {args: request.args, kwargs: request.kwargs};
    if (request.compression) options.compression = ts.Compressor.Gzip;
    const result = client.createTask(request.task).applyAsync(options);
    print({task_id: result.taskId});
    await new Promise((done) => setTimeout(done, 500));  // its disconnect() waits for the backend forever
  }
}
main().then(() => process.exit(0), (error) => { process.stderr.write(String(error.stack)); process.exit(2); });
"""


def ensure_packages() -> Path:
    """The node_modules folder holding the pinned packages (installed with npm if needed)."""
    for name, version in PACKAGES.items():
        ensure_npm_package(name, version)
    return npm_cache_dir() / "node_modules"


class NodeCelery:
    """Sends tasks with a Node Celery client."""

    def __init__(self, modules: Path) -> None:
        self.modules = modules

    def send(self, client: str, broker: str, task: str, *, args: list[Any] | None = None,
             kwargs: dict[str, Any] | None = None, backend: str | None = None, compression: bool = False,
             wait_s: float = 0) -> list[dict[str, Any]]:
        """Send one task; returns the script's JSON lines (the task id, then the result when waiting)."""
        request = {"client": client, "broker": broker, "backend": backend, "task": task, "args": args or [],
                   "kwargs": kwargs or {}, "compression": compression, "wait_s": wait_s}
        done = subprocess.run(["node", "-e", _SEND, str(self.modules), json.dumps(request)],
                              capture_output=True, text=True, timeout=60 + wait_s)
        if done.returncode != 0:
            raise RuntimeError(f"{client} failed: {done.stderr}")
        return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def node_celery() -> NodeCelery:
    """Node Celery producers, installed into the npm cache on first use."""
    return NodeCelery(ensure_packages())
