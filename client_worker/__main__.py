"""Command line: `python -m client_worker {run,generate,enqueue,healthcheck,dead-letters}`.

* `run` — the Redis worker (configuration from the environment, see `.env.example`).
* `generate IMAGE_OR_URL -o DIR/NAME.glb [--preset] [--quality-check] [--triton-url]` — one image
  through Triton to the asset's files, without Redis or storage: the same pipeline core and files as
  a queued job, checked against the photo as a job's are (`QUALITY_CHECK`; the JSON it prints has the
  `quality` object). The path names the GLB; the USDZ is written beside it with the same stem
  (`DIR/NAME.usdz`), and the poster as `DIR/poster.png`.
* `check-photos URL_OR_PATH... [--json] [--triton-url]` — each photo's measures and problems from
  Triton's `photo_check`, and the one a job would mesh under `PHOTO_CHECK` (docs/photo-check.md);
  exit 0 when one would be, 1 when the job would fail.
* `enqueue URL... [--shop --product-id --variant-id --quality --wait S]` — push a job in the
  integration guide's "Manually Queue a Test Job" format, for local use.
* `healthcheck [--fail-on-stranded]` — exit 0 when a worker of this host (`WORKER_NAME`) has a
  live heartbeat in Redis, 1 otherwise; for container orchestrators. With `--fail-on-stranded`, also
  1 while messages wait in priority lists the worker does not read (a readiness probe).
* `dead-letters {list,replay} [--rejected]` — what the worker moved aside (failed jobs, or with
  `--rejected` the messages it could not take): list them as JSON lines, or replay some
  (`--index N`, `--job-id ID`, `--all`) onto the queue (docs/runbook.md, "Rejected and dead-letter messages").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from client_worker.config import ConfigError, QualityCheckMode, Settings, load_settings
from client_worker.errors import JobError
from client_worker.jobs.keys import RedisKeys
from client_worker.pipeline.presets import PRESETS, get_preset
from client_worker.redaction import Redaction

if TYPE_CHECKING:
    from client_worker.photo_choice import CheckedPhoto


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m client_worker", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("run", help="consume jobs from Redis until SIGTERM")

    generate = commands.add_parser("generate", help="one image (file or URL) through Triton to GLB, USDZ and poster")
    generate.add_argument("image", help="path of an image file, or an http(s) URL")
    generate.add_argument("-o", "--output", required=True, type=Path,
                          help="GLB file to write; the .usdz with the same stem and poster.png go beside it")
    generate.add_argument("--preset", choices=sorted(PRESETS), help="quality preset (default: DEFAULT_PRESET)")
    generate.add_argument("--quality-check", choices=get_args(QualityCheckMode),
                          help="what the check against the photo decides (default: QUALITY_CHECK)")
    generate.add_argument("--triton-url", help="Triton gRPC host:port (default: TRITON_URL)")
    generate.add_argument("--model-version", help="pin a model version (default: TRITON_MODEL_VERSION, or latest)")

    check = commands.add_parser("check-photos", help="check photos (files or URLs) and say which a job would mesh")
    check.add_argument("photos", nargs="+", metavar="URL_OR_PATH", help="photo files or http(s) URLs, in a job's order")
    check.add_argument("--json", action="store_true", help="print the webhook's photo_choice report as JSON")
    check.add_argument("--triton-url", help="Triton gRPC host:port (default: TRITON_URL)")

    enqueue = commands.add_parser("enqueue", help="push a guide-format job onto the queue")
    enqueue.add_argument("urls", nargs="+", help="product image URLs, in order of preference")
    enqueue.add_argument("--shop", default="test-shop.myshopify.com")
    enqueue.add_argument("--product-id", default="gid://shopify/Product/123")
    enqueue.add_argument("--variant-id")
    enqueue.add_argument("--quality", choices=sorted(PRESETS))
    enqueue.add_argument("--job-id", help="default: a new uuid4")
    enqueue.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                         help="wait up to SECONDS for a final status and print it")

    health = commands.add_parser("healthcheck", help="exit 0 if a worker of this host is alive")
    health.add_argument("--fail-on-stranded", action="store_true",
                        help="exit 1 also while messages wait in priority lists the worker does not read "
                             "(for a readiness probe; docs/runbook.md, \"Stranded messages\")")

    dead_letters = commands.add_parser("dead-letters", help="list or replay failed jobs and rejected messages")
    dead_letters.add_argument("action", choices=["list", "replay"])
    dead_letters.add_argument("--rejected", action="store_true",
                              help="the rejected list (messages that are no job for us) instead of the dead letters")
    dead_letters.add_argument("--limit", type=int, default=0, help="list only the newest N records")
    chosen = dead_letters.add_mutually_exclusive_group()
    chosen.add_argument("--index", type=int, action="append", help="replay the record at this index (0 = newest)")
    chosen.add_argument("--job-id", action="append", help="replay the records of this job")
    chosen.add_argument("--all", action="store_true", help="replay every record")

    args = parser.parse_args(argv)
    from redis.exceptions import RedisError

    from client_worker.startup import redis_problem

    try:
        if args.command == "run":
            return _run()
        settings = load_settings()
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    try:
        if args.command == "generate":
            return asyncio.run(_generate(settings, args))
        if args.command == "check-photos":
            return asyncio.run(_check_photos(settings, args))
        if args.command == "enqueue":
            return asyncio.run(_enqueue(settings, args))
        if args.command == "dead-letters":
            return asyncio.run(_dead_letters(settings, args))
        return asyncio.run(_healthcheck(settings, fail_on_stranded=args.fail_on_stranded))
    except RedisError as error:  # enqueue, dead-letters: Redis unreachable, said in one line
        problem = redis_problem(error, "REDIS_URL", settings.redis_url)
        print(f"{args.command} failed: {Redaction.of(settings)(problem)}", file=sys.stderr)
        return 1


def _run() -> int:
    from client_worker.logs import configure_logging
    from client_worker.worker import run_worker

    from client_worker.startup import StartupError

    settings = load_settings(require_storage=True)
    configure_logging(settings.log_level, Redaction.of(settings))
    try:
        asyncio.run(run_worker(settings))
    except StartupError as error:  # a dependency failed at start: one line (client_worker/startup.py)
        print(f"worker not started: {Redaction.of(settings)(str(error))}", file=sys.stderr)
        return 1
    return 0


async def _generate(settings: Settings, args: argparse.Namespace) -> int:
    import httpx

    from asset.real_size import RealSize
    from client_worker.download import DownloadLimits, download_first_image
    from client_worker.pipeline.photo_to_asset import MODEL_FILE, POSTER_FILE, AssetPipeline
    from client_worker.pipeline.inference import TritonMeshClient
    from client_worker.pipeline.quality_check import QUALITY_KEY
    from img2mesh.errors import InvalidInput

    preset = get_preset(args.preset or settings.default_preset)
    client = TritonMeshClient.from_settings(settings, url=args.triton_url, model_version=args.model_version)
    pipeline = AssetPipeline(client, max_resolution=settings.max_resolution,
                             default_size=RealSize(settings.default_largest_side_m))
    started = time.perf_counter()
    try:
        if args.image.startswith(("http://", "https://")):
            async with httpx.AsyncClient(trust_env=False, follow_redirects=False) as http:
                image = (await download_first_image([args.image], DownloadLimits.from_settings(settings), http)).data
        else:
            image = Path(args.image).read_bytes()
        await client.wait_ready(settings.triton_ready_timeout_s)
        asset = await pipeline.make(image, preset, quality_check=args.quality_check or settings.quality_check)
    except (JobError, InvalidInput, OSError) as error:
        print(f"generate failed: {Redaction.of(settings)(str(error))}", file=sys.stderr)
        return 1
    finally:
        await client.close()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    written = {}
    for file in asset.files:
        stem = POSTER_FILE if file.role == POSTER_FILE else args.output.stem
        path = args.output.parent / f"{stem}{file.extension}"
        path.write_bytes(file.data)
        written[file.role] = str(path)
    details = asset.details
    print(json.dumps({
        "output": written[MODEL_FILE], "files": written, "bytes": details["file_size_bytes"],
        "vertices": details["vertex_count"], "faces": details["face_count"], "preset": details["preset"],
        "model": details["model_name"], "model_version": details["model_version"],
        "weights_version": details["weights_version"], "background_removal": details["background_removal"],
        QUALITY_KEY: details[QUALITY_KEY], "seconds": round(time.perf_counter() - started, 2),
    }))
    return 0


async def _check_photos(settings: Settings, args: argparse.Namespace) -> int:
    import httpx

    from client_worker.download import DownloadedImage, DownloadLimits, download_each
    from client_worker.errors import PermanentJobError
    from client_worker.photo_choice import PhotoChoice, chosen_photo, report
    from client_worker.pipeline.inference import TritonMeshClient

    client = TritonMeshClient.from_settings(settings, url=args.triton_url)
    urls = [photo for photo in args.photos if photo.startswith(("http://", "https://"))]
    try:
        async with httpx.AsyncClient(trust_env=False, follow_redirects=False) as http:
            downloads = dict(zip(urls, await download_each(urls, DownloadLimits.from_settings(settings), http)))
            loaded: list[tuple[str, bytes | JobError]] = []
            for photo in args.photos:
                if photo in downloads:
                    got = downloads[photo]
                    loaded.append((photo, got.data if isinstance(got, DownloadedImage) else got))
                else:
                    try:
                        loaded.append((photo, Path(photo).read_bytes()))
                    except OSError as error:
                        loaded.append((photo, PermanentJobError(f"cannot read the file: {error.strerror}")))
            checked = await PhotoChoice.from_settings(settings, client, http).check_all(loaded)
    except JobError as error:
        print(f"check-photos failed: {Redaction.of(settings)(str(error))}", file=sys.stderr)
        return 1
    finally:
        await client.close()
    mode = settings.photo_check
    chosen = chosen_photo(checked, mode)
    if args.json:
        print(json.dumps(report(checked, mode, chosen)))
    else:
        print(_photo_table(checked, chosen))
        verdict = f"a job would mesh {chosen.url}" if chosen else "no photo is usable: a job would fail"
        print(f"PHOTO_CHECK={mode}: {verdict}")
    return 0 if chosen is not None else 1


def _photo_table(photos: list[CheckedPhoto], chosen: CheckedPhoto | None) -> str:
    """One line per photo: its measures and problems (``*`` marks the chosen one)."""
    rows = [("", "photo", "side px", "objects", "undecided", "cut off", "problems")]
    for photo in photos:
        measures = photo.measures
        if measures is None:
            rows.append(("", photo.url, "", "", "", "", f"error: {photo.failure}"))
            continue
        rows.append(("*" if photo is chosen else "", photo.url, str(measures.object_side_px), str(measures.object_count),
                     f"{measures.undecided_share:.2f}", ",".join(measures.cut_off_sides) or "-",
                     ", ".join(problem.code for problem in measures.problems) or "-"))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


async def _enqueue(settings: Settings, args: argparse.Namespace) -> int:
    from redis.asyncio import Redis

    job_id = args.job_id or str(uuid.uuid4())
    kwargs: dict[str, object] = {
        "job_id": job_id, "shop": args.shop, "product_id": args.product_id,
        "image_urls": list(args.urls), "metadata": {},
    }
    if args.variant_id:
        kwargs["variant_id"] = args.variant_id
    if args.quality:
        kwargs["quality"] = args.quality
    message = {"task": settings.task_name, "id": str(uuid.uuid4()), "args": [], "kwargs": kwargs}
    redis = Redis.from_url(settings.redis_url)
    try:
        await redis.lpush(settings.queue_name, json.dumps(message))
        print(json.dumps({"job_id": job_id, "queue": settings.queue_name}))
        deadline = time.monotonic() + args.wait
        status_key = RedisKeys(settings.key_prefix).status(job_id)
        while time.monotonic() < deadline:
            status = {k.decode(): v.decode() for k, v in (await redis.hgetall(status_key)).items()}
            if status.get("status") in ("completed", "failed"):
                print(json.dumps(status))
                return 0 if status["status"] == "completed" else 1
            await asyncio.sleep(0.5)
    finally:
        await redis.aclose()
    if args.wait:
        print(f"no final status for job {job_id} after {args.wait:g} s", file=sys.stderr)
        return 1
    return 0


async def _healthcheck(settings: Settings, *, fail_on_stranded: bool = False) -> int:
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    from client_worker.jobs.priorities import PriorityLists, stranded_messages
    from client_worker.startup import redis_problem

    keys = RedisKeys(settings.key_prefix)
    redis = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        members = [member.decode() for member in await redis.smembers(keys.workers())]
        ours = [member for member in members if member.startswith(f"{settings.worker_name}:")]
        alive = [member for member in ours if await redis.exists(keys.heartbeat(member))]
        stranded = await stranded_messages(redis, PriorityLists.from_settings(settings), settings.queue_name)
    except (RedisError, OSError) as error:
        print(f"unhealthy: {Redaction.of(settings)(redis_problem(error, 'REDIS_URL', settings.redis_url))}",
              file=sys.stderr)
        return 1
    finally:
        await redis.aclose()
    if not alive:
        print(f"unhealthy: no live worker named {settings.worker_name!r} (registered: {len(ours)})", file=sys.stderr)
        return 1
    report: dict[str, object] = {"healthy": True, "workers": alive}
    if stranded.lists:
        # Healthy unless asked otherwise: a restart cannot fix a setting, and the worker serves the
        # lists it reads; a readiness probe may ask, to show the stranded work (docs/runbook.md).
        report["stranded_messages"] = stranded.shown()
        report["advice"] = stranded.advice(settings)
        if fail_on_stranded:
            report["healthy"] = False
            print(json.dumps(report))
            print(f"unhealthy: {stranded.advice(settings)}", file=sys.stderr)
            return 1
    print(json.dumps(report))
    return 0


async def _dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    from redis.asyncio import Redis

    from client_worker.jobs.dead_letters import DeadLetters

    which = "rejected" if args.rejected else "dead"
    redis = Redis.from_url(settings.redis_url)
    try:
        lists = DeadLetters(redis, settings)
        records = await lists.records(which, 0 if args.action == "replay" else args.limit)
        if args.action == "list":
            for record in records:
                print(json.dumps(record.summary(), ensure_ascii=False))
            return 0
        if not (args.all or args.index or args.job_id):
            print("replay needs --index N, --job-id ID or --all", file=sys.stderr)
            return 2
        indexes, job_ids = set(args.index or []), set(args.job_id or [])
        chosen = [record for record in records
                  if args.all or record.index in indexes or record.fields.get("job_id") in job_ids]
        replayed = await lists.replay(which, chosen)
    finally:
        await redis.aclose()
    print(json.dumps({"list": lists.names[which], "replayed": replayed, "queue": settings.queue_name}))
    return 0 if replayed == len(chosen) and chosen else 1


if __name__ == "__main__":
    sys.exit(main())
