"""After a backend outage the outbox drains at once: a real worker process, real Redis, a real HTTP
receiver that answers 503 for 15 s and is then down for 15 s while 30 jobs finish; every final
webhook arrives within 10 s of the receiver answering again, in order per job, at most
`WEBHOOK_CONCURRENCY` requests at a time (docs/webhooks.md, "Delivery semantics")."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable

import redis

from client_worker.config import Settings
from tests.support.webhook_receiver import WebhookReceiver
from tests.support.worker_jobs import guide_job, wait_until
from tests.worker.conftest import final_events

JOBS = 30
RECOVERY_TARGET_S = 10.0


def test_the_backlog_of_a_30_second_backend_outage_arrives_within_10_s_of_recovery(
    e2e_settings: Callable[..., Settings], worker_process: Callable[[Settings], subprocess.Popen[bytes]],
    photo_url: str, redis_url: str, webhook_receiver: WebhookReceiver,
) -> None:
    # The webhook timings of production (.env.example), not the fast ones of the other tests.
    settings = e2e_settings(concurrency=4, webhook_timeout_s=10, webhook_attempts=3, webhook_retry_base_delay_s=1,
                            webhook_redelivery_max_delay_s=300, webhook_concurrency=8)
    r = redis.Redis.from_url(redis_url)
    worker_process(settings)
    wait_until(lambda: r.smembers("img2mesh:workers"), 60, "the worker process to register")
    webhook_receiver.delay_s = 0.05  # a backend that takes a moment per request: concurrency shows

    outage = time.monotonic()
    webhook_receiver.answer_all(503)
    jobs = [f"outage-{index}" for index in range(JOBS)]
    for job_id in jobs:
        r.lpush("celery", json.dumps(guide_job(job_id, [photo_url])))
    time.sleep(15)
    webhook_receiver.stop()  # then the backend is gone: connections are refused
    wait_until(lambda: all(r.hget(f"img2mesh:status:{job_id}", "status") in (b"completed", b"failed")
                           for job_id in jobs), 60, "every job to finish during the outage")
    time.sleep(max(0.0, outage + 30 - time.monotonic()))
    assert not any(final_events(jobs, webhook_receiver).values()), "a final webhook got through the outage"
    assert r.hlen("img2mesh:outbox") == JOBS

    webhook_receiver.answer_all(None)
    webhook_receiver.start()
    recovered = time.monotonic()
    wait_until(lambda: all(final_events(jobs, webhook_receiver).values()), 120, "every final webhook")
    arrivals = [delivery.at for delivery in webhook_receiver.deliveries
                if delivery.answered < 300 and delivery.json["status"] in ("completed", "failed")]
    backlog_s = max(arrivals) - recovered
    print(f"backlog of {JOBS} jobs after a {recovered - outage:.0f} s backend outage: the last final webhook "
          f"{backlog_s:.1f} s after recovery, at most {webhook_receiver.most_in_flight} requests at once")
    assert backlog_s < RECOVERY_TARGET_S
    assert webhook_receiver.most_in_flight <= settings.webhook_concurrency
    for job_id in jobs:
        accepted = [body["status"] for body in webhook_receiver.accepted(job_id)]
        assert accepted[-1] == "completed" and accepted.count("completed") == 1, (job_id, accepted)
    wait_until(lambda: r.hlen("img2mesh:outbox") == 0, 10, "the outbox to be empty")
