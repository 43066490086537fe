"""Intake: every producer's wire format becomes the same job; anything else is rejected with a reason.

Celery envelopes are produced by a real `celery.send_task` on the real redis-server and read
back with LRANGE, so the test follows whatever the installed kombu actually writes.
"""

from __future__ import annotations

import base64
import json
import tracemalloc
import uuid
import zlib
from typing import Any

import pytest
import redis
from celery import Celery

from client_worker.jobs import ids
from client_worker.jobs.celery_wire import RejectedMessage, parse_message
from client_worker.jobs.intake import MalformedJob, parse_job
from client_worker.jobs.limits import MessageLimits
from client_worker.storage import STORAGE_KEY_MAX_BYTES, storage_stem
from tests.support.node_celery import NodeCelery

TASK = "generate_3d_model"

JOB = {
    "job_id": "8a7f6a3e-54f1-4c55-9a0e-3c7f0d0f7c11",
    "shop": "test-shop.myshopify.com",
    "product_id": "gid://shopify/Product/123",
    "product_handle": "test-product",
    "variant_id": "gid://shopify/ProductVariant/987654321",
    "image_urls": ["https://example.com/image.jpg"],
    "metadata": {"productTitle": "Coffee Mug", "variantTitle": "Blue"},
}


def sent_by_celery(redis_url: str, **app_options: Any) -> bytes:
    """What `celery.send_task(TASK, kwargs=JOB)` leaves on the `celery` list."""
    app = Celery("producer", broker=redis_url)
    app.conf.update(app_options)
    app.send_task(TASK, kwargs=JOB)
    client = redis.Redis.from_url(redis_url)
    try:
        (raw,) = client.lrange("celery", 0, -1)
    finally:
        client.close()
    app.close()
    return raw


def assert_is_job(raw: bytes | str, wire_format: str) -> None:
    message = parse_message(raw, TASK)
    assert message.wire_format == wire_format
    job = parse_job(message)
    assert job.job_id == JOB["job_id"]
    assert job.shop == JOB["shop"]
    assert job.product_id == JOB["product_id"]
    assert job.variant_id == JOB["variant_id"]
    assert job.image_urls == JOB["image_urls"]
    assert job.metadata == JOB["metadata"]


def test_guide_snippet_shape() -> None:
    raw = json.dumps({"task": TASK, "id": str(uuid.uuid4()), "args": [], "kwargs": JOB})
    assert_is_job(raw, "guide")


def test_bare_payload_with_camel_case_keys() -> None:
    camel = {"jobId": JOB["job_id"], "shop": JOB["shop"], "productId": JOB["product_id"],
             "variantId": JOB["variant_id"], "imageUrls": JOB["image_urls"], "metadata": JOB["metadata"]}
    assert_is_job(json.dumps(camel).encode(), "bare")


def test_celery_send_task_protocol_2(redis_url: str) -> None:
    raw = sent_by_celery(redis_url)
    envelope = json.loads(raw)
    assert envelope["properties"]["body_encoding"] == "base64"  # the format under test really is base64
    assert_is_job(raw, "celery-v2")
    assert parse_message(raw, TASK).task_id == envelope["headers"]["id"]


def test_celery_send_task_protocol_1(redis_url: str) -> None:
    raw = sent_by_celery(redis_url, task_protocol=1)
    assert json.loads(raw)["headers"] == {}
    assert_is_job(raw, "celery-v1")


@pytest.mark.parametrize("compression", ["gzip", "bzip2", "lzma"])
def test_celery_compressed_body(redis_url: str, compression: str) -> None:
    raw = sent_by_celery(redis_url, task_compression=compression)
    assert json.loads(raw)["headers"]["compression"]
    assert_is_job(raw, "celery-v2")


def test_celery_utf8_body_encoding(redis_url: str) -> None:
    raw = sent_by_celery(redis_url, broker_transport_options={"body_encoding": "utf-8"})
    assert json.loads(raw)["properties"]["body_encoding"] == "utf-8"
    assert_is_job(raw, "celery-v2")


def test_celery_eta_and_positional_job_id(redis_url: str) -> None:
    app = Celery("producer", broker=redis_url)
    kwargs = {key: value for key, value in JOB.items() if key != "job_id"}
    app.send_task(TASK, args=[JOB["job_id"]], kwargs=kwargs, countdown=30)
    raw = redis.Redis.from_url(redis_url).lrange("celery", 0, -1)[0]
    message = parse_message(raw, TASK)
    assert message.eta is not None and message.eta.tzinfo is not None
    assert parse_job(message).job_id == JOB["job_id"]


def test_celery_chain_and_priority_are_read(redis_url: str) -> None:
    from celery import chain

    app = Celery("producer", broker=redis_url)
    chain(app.signature(TASK, kwargs=JOB), app.signature("notify", args=("shop",)),
          app.signature("archive", immutable=True)).apply_async(priority=4)
    (raw,) = redis.Redis.from_url(redis_url).lrange("celery\x06\x163", 0, -1)
    message = parse_message(raw, TASK)
    assert [step["task"] for step in message.chain] == ["archive", "notify"]  # reversed, as Celery sends it
    assert message.priority == 4 and message.root_id == message.task_id
    assert_is_job(raw, "celery-v2")


def test_celery_node_sends_a_job(redis_url: str, node_celery: NodeCelery) -> None:
    (sent,) = node_celery.send("celery-node", redis_url, TASK, kwargs=JOB)
    (raw,) = redis.Redis.from_url(redis_url).lrange("celery", 0, -1)
    assert json.loads(raw)["headers"]["lang"] == "js"
    assert_is_job(raw, "celery-v2")
    assert parse_message(raw, TASK).task_id == sent["task_id"]


def test_celery_ts_gzip_body_is_read_as_kombu_reads_it(redis_url: str, node_celery: NodeCelery) -> None:
    """celery-ts labels a compressed body `content-encoding: base64`; kombu ignores that label for
    JSON, and so does the worker."""
    node_celery.send("celery-ts", redis_url, TASK, kwargs=JOB, compression=True)
    (raw,) = redis.Redis.from_url(redis_url).lrange("celery", 0, -1)
    envelope = json.loads(raw)
    assert (envelope["content-encoding"], envelope["headers"]["compression"]) == ("base64", "application/x-gzip")
    assert_is_job(raw, "celery-v2")


def test_celery_node_envelope() -> None:
    """celery.node: lang js, three headers, camelCase correlationId/replyTo, embed {}."""
    body = base64.b64encode(json.dumps([[], JOB, {}]).encode()).decode()
    raw = json.dumps({
        "body": body, "content-type": "application/json", "content-encoding": "utf-8",
        "headers": {"lang": "js", "task": TASK, "id": "node-1"},
        "properties": {"correlationId": "node-1", "replyTo": "x", "body_encoding": "base64",
                       "delivery_info": {"exchange": "", "routing_key": "celery"}, "delivery_mode": 2,
                       "delivery_tag": str(uuid.uuid4())},
    })
    assert_is_job(raw, "celery-v2")
    assert parse_message(raw, TASK).task_id == "node-1"


def test_node_celery_ts_envelope() -> None:
    """node-celery-ts: plain utf-8 body, constant delivery tag, embed null."""
    raw = json.dumps({
        "body": json.dumps([[], JOB, None]), "content-type": "application/json", "content-encoding": "utf-8",
        "headers": {"lang": "py", "task": TASK, "id": "ts-1", "argsrepr": "[]", "kwargsrepr": "{}"},
        "properties": {"body_encoding": "utf-8", "delivery_tag": "celery", "reply_to": "app",
                       "delivery_info": {"exchange": "", "routing_key": "celery"}},
    })
    assert_is_job(raw, "celery-v2")


def celery_v2(compressed_body: bytes) -> str:
    """A protocol-2 envelope with a compressed body, as `task_compression="gzip"` sends it."""
    return json.dumps({
        "body": base64.b64encode(compressed_body).decode(), "content-type": "application/json",
        "content-encoding": "utf-8", "headers": {"task": TASK, "id": "c1", "compression": "application/x-gzip"},
        "properties": {"body_encoding": "base64", "delivery_info": {"exchange": "", "routing_key": "celery"}},
    })


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe not utf-8", "not UTF-8"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "expected an object"),
        (json.dumps({"hello": "world"}), "not a job"),
        (json.dumps({"task": "send_email", "id": "1", "args": [], "kwargs": {}}), "'send_email' is not handled"),
        (json.dumps({"body": "!!!", "headers": {"task": TASK}, "properties": {"body_encoding": "base64"}}),
         "not valid base64"),
        (json.dumps({"body": "x", "content-type": "application/x-python-serialize",
                     "headers": {"task": TASK}, "properties": {}}), "only JSON is accepted"),
        (json.dumps({"body": "eJw=", "headers": {"task": TASK, "compression": "application/x-brotli"},
                     "properties": {"body_encoding": "base64"}}), "compressed with"),
        ("[" * 100_000 + "]" * 100_000, "nests deeper than MESSAGE_MAX_DEPTH"),
        (json.dumps({"task": TASK, "kwargs": {"job_id": "j", "deep": {"a": [[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]}}}),
         "nests deeper than MESSAGE_MAX_DEPTH"),
        (json.dumps({"task": TASK, "kwargs": {"job_id": "x" * 2_000_000}}), "more than MESSAGE_MAX_BYTES"),
        (celery_v2(zlib.compress(b"[[], {}, {}]")[:-4]), "cannot be decompressed"),
        (json.dumps({"task": TASK, "kwargs": {"job_id": "x"}, "args": "nope"}), "'args' must be a list"),
    ],
    ids=["not-utf8", "not-json", "array", "not-a-job", "other-task", "bad-base64", "pickle", "brotli",
         "deep-array", "deep-payload", "huge", "truncated-gzip", "args-not-a-list"],
)
def test_rejected_messages_name_the_reason(raw: bytes | str, reason: str) -> None:
    with pytest.raises(RejectedMessage, match=reason):
        parse_message(raw, TASK, MessageLimits(max_depth=16))


def test_a_compression_bomb_is_refused_without_being_expanded() -> None:
    """64 kB of gzip that would expand to 64 MB (the tester's 680 kB grew the worker by 750 MB)."""
    bomb = zlib.compressobj(9)
    chunks = [bomb.compress(b"[" + b" " * (1024 * 1024 - 1))] + [bomb.compress(b" " * 1024 * 1024) for _ in range(63)]
    raw = celery_v2(b"".join(chunks) + bomb.flush())
    tracemalloc.start()
    with pytest.raises(RejectedMessage, match="expands to more than MESSAGE_MAX_DECOMPRESSED_BYTES"):
        parse_message(raw, TASK)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 3 * MessageLimits().max_decompressed_bytes


def test_a_number_beyond_pythons_digit_limit_is_refused_by_its_field_s_limit() -> None:
    """A 5,000-digit literal would make `json.loads` raise; it stays text, so the job can still be reported."""
    digits = "7" * 5000
    raw = (f'{{"task": "{TASK}", "id": "t", "kwargs": {{"job_id": "j", "shop": "s", '
           f'"image_urls": ["https://a/b.jpg"], "product_id": {digits}}}}}')
    with pytest.raises(MalformedJob, match="'product_id' is a number of 5000 digits; Shopify ids have at most 20") as caught:
        parse_job(parse_message(raw, TASK))
    assert caught.value.job_id == "j"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"shop": "s" * 254}, r"'shop' must be the shop's host name, e\.g\. shop-name\.myshopify\.com \(at most 253"),
        ({"shop": "shop/../other.myshopify.com"}, "'shop' must be the shop's host name"),
        ({"product_id": "9" * 21}, "'product_id' is a number of 21 digits; Shopify ids have at most 20"),
        ({"product_id": "gid://shopify/Product/1?" + "x" * 300}, r"'product_id' must be a Shopify GID .*at most 255"),
        ({"product_id": 10**30}, "'product_id' is a number of 31 digits"),
        ({"variant_id": "blue"}, "'variant_id' must be a Shopify GID"),
        ({"product_handle": "h" * 256}, "'product_handle' must be 1 to 255 letters"),
        ({"product_handle": "mug\nInjected: header"}, "'product_handle' must be 1 to 255 letters"),
    ],
)
def test_every_id_is_bounded_and_a_bad_one_names_its_field_and_limit(change: dict[str, Any], message: str) -> None:
    parsed = parse_message(json.dumps({"task": TASK, "id": "t", "args": [], "kwargs": {**JOB, **change}}), TASK)
    with pytest.raises(MalformedJob, match=message) as caught:
        parse_job(parsed)
    assert caught.value.job_id == JOB["job_id"] and len(str(caught.value)) < 500


@pytest.mark.parametrize("job_id", ["7" * 129, 10**200, "a/b", "../x", "id with spaces", "ñ", ""])
def test_an_unusable_job_id_leaves_no_job_to_report_to(job_id: object) -> None:
    """Routing moves such a message to the rejected list with this reason (tests/worker/test_end_to_end.py)."""
    parsed = parse_message(json.dumps({"task": TASK, "id": "t", "args": [], "kwargs": {**JOB, "job_id": job_id}}), TASK)
    with pytest.raises(MalformedJob, match="'job_id' ") as caught:
        parse_job(parsed)
    assert caught.value.job_id is None


def test_the_longest_ids_accepted_still_fit_a_storage_key() -> None:
    longest = {**JOB, "job_id": "j" * ids.JOB_ID_MAX_CHARS, "shop": ".".join(["s" * 63] * 4)[:ids.SHOP_MAX_CHARS],
               "product_id": "9" * ids.SHOPIFY_ID_MAX_DIGITS, "variant_id": "8" * ids.SHOPIFY_ID_MAX_DIGITS}
    job = parse_job(parse_message(json.dumps({"task": TASK, "id": "t", "kwargs": longest}), TASK))
    key = storage_stem(job.shop, job.product_id, job.variant_id, job.job_id) + ".usdz"
    assert len(key.encode()) <= STORAGE_KEY_MAX_BYTES


@pytest.mark.parametrize("encoding", ["binary", "base64", "utf-16", None])
def test_content_encoding_is_ignored_for_json_bodies(encoding: str | None) -> None:
    body = base64.b64encode(json.dumps([[], JOB, {}]).encode()).decode()
    raw = json.dumps({"body": body, "content-type": "application/json", "content-encoding": encoding,
                      "headers": {"task": TASK, "id": "e1"}, "properties": {"body_encoding": "base64"}})
    assert_is_job(raw, "celery-v2")


@pytest.mark.parametrize(
    ("headers", "body_embed", "message"),
    [
        ({"eta": "tomorrow at noon"}, None, "the Celery 'eta' is not an ISO-8601 time: 'tomorrow at noon'"),
        ({"expires": 12}, None, "the Celery 'expires' is not an ISO-8601 time"),
        ({}, {"chain": "archive"}, "the Celery embed.chain is not a list of task signatures"),
        ({}, {"callbacks": [{"task": "celery.group", "subtask_type": "group", "kwargs": {}}]},
         "holds a group, which this worker cannot continue"),
    ],
)
def test_unusable_task_options_fail_the_job_that_names_itself(
    headers: dict[str, Any], body_embed: dict[str, Any] | None, message: str
) -> None:
    body = base64.b64encode(json.dumps([[], JOB, body_embed]).encode()).decode()
    raw = json.dumps({"body": body, "content-type": "application/json",
                      "headers": {"task": TASK, "id": "o1", **headers}, "properties": {"body_encoding": "base64"}})
    with pytest.raises(MalformedJob, match=message) as caught:
        parse_job(parse_message(raw, TASK))
    assert caught.value.job_id == JOB["job_id"]


@pytest.mark.parametrize(
    ("change", "message", "job_id"),
    [
        ({"job_id": None}, "'job_id'", None),
        ({"image_urls": []}, "'image_urls' is empty; list at least one product image URL", JOB["job_id"]),
        ({"image_urls": "https://example.com/a.jpg"}, "must be a list of URL strings", JOB["job_id"]),
        ({"image_urls": ["https://example.com/a.jpg", 7]}, "item 1 is 7", JOB["job_id"]),
        ({"shop": None}, "'shop'", JOB["job_id"]),
    ],
)
def test_malformed_job_explains_itself(change: dict[str, Any], message: str, job_id: str | None) -> None:
    payload = {key: value for key, value in {**JOB, **change}.items() if value is not None}
    parsed = parse_message(json.dumps({"task": TASK, "id": "t", "args": [], "kwargs": payload}), TASK)
    with pytest.raises(MalformedJob, match=message) as caught:
        parse_job(parsed)
    assert caught.value.job_id == job_id


@pytest.mark.parametrize(("change", "mode"), [
    ({}, None),
    ({"quality_check_mode": "strict"}, "strict"),
    ({"metadata": {"quality_check_mode": " Report "}}, "report"),
])
def test_a_job_may_choose_its_own_quality_check(change: dict[str, Any], mode: str | None) -> None:
    payload = {**JOB, **change}
    job = parse_job(parse_message(json.dumps({"task": TASK, "id": "t", "args": [], "kwargs": payload}), TASK))
    assert job.quality_check_mode == mode


def test_an_unknown_quality_check_mode_fails_the_job_at_intake() -> None:
    payload = {**JOB, "metadata": {"quality_check_mode": "lax"}}
    with pytest.raises(MalformedJob, match="quality_check_mode must be one of off, report, review, strict, got 'lax'"):
        parse_job(parse_message(json.dumps({"task": TASK, "id": "t", "args": [], "kwargs": payload}), TASK))
