"""Roll the TripoSR version that a running Triton serves forward or back, without downtime.

    python -m export.rollout status   --triton-url HOST:8001
    python -m export.rollout roll     --triton-url HOST:8001 --version 2
    python -m export.rollout rollback --triton-url HOST:8001 --version 1

Triton must run in explicit model-control mode (``--model-control-mode=explicit``): every change
goes through its repository API as ``load_model`` with a config override whose ``version_policy``
is ``specific`` on the wanted versions, so nothing is left to Triton's own choice of "latest".

A TripoSR version is a pair: the encoder that requests enter (``--model``, triposr_encoder) and
the decoder the mesher calls through BLS (``--companion``, triposr_decoder). The two must switch
together, so a roll runs in three steps:

1. stage: load the target version of each companion *next to* the versions it serves;
2. switch: load the model with only the target version; Triton swaps it in once it is ready and
   lets the requests already running on the old version finish;
3. retire: once no request has used a companion's old version for ``--drain-quiet-s`` (a mesh
   in progress calls the decoder again after marching cubes), unload it. The mesher pins its
   decoder calls to the version of the encoder that made the scene codes, so after the switch
   only jobs already in flight use the old decoder.

A load that fails (corrupt file, bad config, out of memory) leaves the versions that were serving
untouched — Triton only swaps in a version that loaded — and the roll stops there with Triton's
reason; companions staged by this roll are unloaded again. Exit status: 0 done, 1 the roll was
refused or failed (the old version still serves), 2 Triton could not be reached.

What Triton serves after a restart is what ``config.pbtxt`` says (``latest``: the highest version
directory), not what a roll chose: see docs/runbook.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from img2mesh.contract import DECODER, ENCODER, ENSEMBLE

MODEL = ENCODER
COMPANIONS = (DECODER,)

Log = Callable[[str], None]


class RolloutError(Exception):
    """The roll did not complete; the versions that were serving still serve. ``str()`` says why."""


@dataclass(frozen=True)
class ModelState:
    """What Triton's repository index says about one model."""

    name: str
    ready: tuple[int, ...] = ()
    failed: dict[int, str] = field(default_factory=dict)

    def describe(self) -> str:
        serving = ", ".join(map(str, self.ready)) or "none"
        text = f"{self.name}: serving {serving}"
        for version, reason in sorted(self.failed.items()):
            # An engine's reason can span lines (OpenVINO adds a Python traceback); status keeps one line per model.
            text += f"; version {version} failed to load: {' '.join(reason.split())}"
        return text


def states_from_index(index: dict, names: Iterable[str]) -> dict[str, ModelState]:
    """Ready versions and load failures per model, from ``get_model_repository_index(as_json=True)``.

    A version that is UNAVAILABLE because it was unloaded is history, not a failure.
    """
    ready: dict[str, list[int]] = {name: [] for name in names}
    failed: dict[str, dict[int, str]] = {name: {} for name in names}
    for entry in index.get("models", []):
        name, version = entry.get("name"), entry.get("version")
        if name not in ready or not version:
            continue
        if entry.get("state") == "READY":
            ready[name].append(int(version))
        elif entry.get("state") == "UNAVAILABLE" and entry.get("reason") not in (None, "", "unloaded"):
            failed[name][int(version)] = entry["reason"]
    return {name: ModelState(name, tuple(sorted(ready[name])), failed[name]) for name in ready}


def with_version_policy(config: dict, versions: Iterable[int]) -> dict:
    """``config`` (Triton's JSON model config) serving exactly ``versions``; everything else kept."""
    wanted = sorted(set(versions))
    if not wanted:
        raise ValueError("a model must keep at least one version")
    updated = dict(config)
    updated["version_policy"] = {"specific": {"versions": [str(v) for v in wanted]}}
    return updated


@dataclass
class Rollout:
    """Version changes on one Triton server, step by step, with the reason when a step fails."""

    client: grpcclient.InferenceServerClient
    model: str = MODEL
    companions: Sequence[str] = COMPANIONS
    ensemble: str = ENSEMBLE
    drain_quiet_s: float = 15.0
    drain_timeout_s: float = 600.0
    log: Log = print

    @property
    def models(self) -> tuple[str, ...]:
        return (self.model, *self.companions)

    def states(self) -> dict[str, ModelState]:
        index = self.client.get_model_repository_index(as_json=True)
        return states_from_index(index, (*self.models, self.ensemble))

    def ensemble_ready(self) -> bool:
        return bool(self.client.is_model_ready(self.ensemble))

    def status(self) -> list[str]:
        """One line per model, then the ensemble's readiness: what ops need to see first."""
        states = self.states()
        lines = [states[name].describe() for name in self.models]
        lines.append(f"{self.ensemble}: {'ready' if self.ensemble_ready() else 'NOT ready'}")
        return lines

    def load(self, name: str, versions: Iterable[int]) -> None:
        """Make ``name`` serve exactly ``versions``; on failure Triton keeps what it served."""
        config = self.client.get_model_config(name, as_json=True)["config"]
        try:
            self.client.load_model(name, config=json.dumps(with_version_policy(config, versions)))
        except InferenceServerException as error:
            raise RolloutError(f"{name}: {error.message().strip().rstrip(';')}") from error

    def wait_until_unused(self, name: str, old: int) -> None:
        """Return once ``name`` version ``old`` is no longer needed by running requests.

        The mesher pins the decoder to the version of the encoder that served the job, so once
        the encoder has switched, only jobs already in flight call ``old`` (grid chunks, then the
        colours after marching cubes): unloading it under them would fail those jobs. Done when
        ``old`` took no request for ``drain_quiet_s`` (longer than the gap marching cubes leaves
        between decoder calls); gives up after ``drain_timeout_s``.
        """
        started = old_changed = time.monotonic()
        old_count = self._inference_count(name, old)
        while True:
            time.sleep(min(0.5, self.drain_quiet_s))
            now = time.monotonic()
            count = self._inference_count(name, old)
            if count != old_count:
                old_count, old_changed = count, now
            if now - old_changed >= self.drain_quiet_s:
                return
            if now - started >= self.drain_timeout_s:
                self.log(f"[rollout] {name} version {old} still busy after {self.drain_timeout_s:.0f} s; retiring it anyway")
                return

    def _inference_count(self, name: str, version: int) -> int:
        stats = self.client.get_inference_statistics(name, str(version), as_json=True)
        return sum(int(entry.get("inference_count", 0)) for entry in stats.get("model_stats", []))

    def roll(self, version: int, *, only_back: bool = False) -> list[str]:
        """Serve ``version`` of the model and its companions; return the final status lines."""
        before = self.states()
        for name in self.models:
            if version in before[name].failed:
                self.log(f"[rollout] {name} version {version} failed before ({before[name].failed[version]}); trying again")
        current = before[self.model].ready
        if not current:
            raise RolloutError(f"{self.model} serves no version: load the repository first (status shows why)")
        if only_back and version >= max(current):
            raise RolloutError(f"rollback must go to a lower version than the one serving ({max(current)}); use roll")
        if current == (version,) and all(before[c].ready == (version,) for c in self.companions):
            self.log(f"[rollout] version {version} is already the only one serving")
            return self.status()

        staged: list[str] = []
        try:
            for companion in self.companions:
                if version not in before[companion].ready:
                    self.log(f"[rollout] staging {companion} version {version} next to {_versions(before[companion].ready)} …")
                    self.load(companion, (*before[companion].ready, version))
                    staged.append(companion)
            self.log(f"[rollout] switching {self.model} from {_versions(current)} to {version} …")
            self.load(self.model, (version,))
        except RolloutError as error:
            for companion in staged:
                self.log(f"[rollout] unloading the staged {companion} version {version} again …")
                try:
                    self.load(companion, before[companion].ready)
                except RolloutError as cleanup_error:
                    self.log(f"[rollout] {cleanup_error} (version {version} stays loaded next to it)")
            raise RolloutError(f"{error}. Still serving version {_versions(current)}.") from error

        for companion in self.companions:
            for old in before[companion].ready:
                if old != version:
                    self.log(f"[rollout] waiting until {companion} version {old} is unused …")
                    self.wait_until_unused(companion, old)
            if before[companion].ready != (version,):
                self.log(f"[rollout] retiring {companion} versions other than {version} …")
                self.load(companion, (version,))
        lines = self.status()
        if not self.ensemble_ready():
            raise RolloutError(f"version {version} is loaded but {self.ensemble} is not ready:\n" + "\n".join(lines))
        self.log(f"[rollout] serving version {version}")
        return lines


def _versions(versions: Iterable[int]) -> str:
    return "+".join(map(str, versions)) or "none"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m export.rollout", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=("status", "roll", "rollback"))
    parser.add_argument("--triton-url", default="localhost:8001", help="Triton's gRPC address, host:port")
    parser.add_argument("--version", type=int, help="the version to serve (roll, rollback)")
    parser.add_argument("--model", default=MODEL, help="the model whose version clients get (default %(default)s)")
    parser.add_argument("--companion", action="append", help=f"a model switched with it (default {', '.join(COMPANIONS)}); repeat for several")
    parser.add_argument("--ensemble", default=ENSEMBLE, help="the pipeline that must be ready afterwards (default %(default)s)")
    parser.add_argument("--drain-quiet-s", type=float, default=15.0, help="idle time that proves an old version unused (default %(default)s)")
    parser.add_argument("--drain-timeout-s", type=float, default=600.0, help="longest wait for an old version to drain (default %(default)s)")
    args = parser.parse_args(argv)
    if args.command != "status" and (args.version is None or args.version < 1):
        parser.error(f"{args.command} needs --version N (a version number ≥ 1)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    client = grpcclient.InferenceServerClient(args.triton_url)
    rollout = Rollout(
        client,
        model=args.model,
        companions=tuple(args.companion or COMPANIONS),
        ensemble=args.ensemble,
        drain_quiet_s=args.drain_quiet_s,
        drain_timeout_s=args.drain_timeout_s,
        log=lambda line: print(line, flush=True),
    )
    try:
        if args.command == "status":
            lines = rollout.status()
        else:
            lines = rollout.roll(args.version, only_back=args.command == "rollback")
    except RolloutError as error:
        print(f"[rollout] FAILED: {error}", file=sys.stderr, flush=True)
        return 1
    except InferenceServerException as error:
        print(f"[rollout] cannot talk to Triton at {args.triton_url}: {error.message()}", file=sys.stderr)
        return 2
    for line in lines:
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
