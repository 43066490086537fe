"""A job as the backend's integration guide defines it ("Job Payload Structure"), validated once.

Every field is checked where it is defined: each id against its grammar and limit
(``client_worker.jobs.ids``), the image URLs, and the job options (the preset it asks for,
`requested_preset`, and the product's real size, `real_size`: docs/webhooks.md, "Job options"),
parsed here once so that the rest of the worker reads them from the `Job`. A bad option's message
is the option's own (`JOB_OPTION`), as a merchant reads it. Unknown keys are kept, as a Celery
worker would keep them.

Adding a job option: a field here with its validator, and its use where the job is processed. Where the job came from (a Celery
envelope, a bare payload) is ``client_worker.jobs.celery_wire``'s business.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, get_args

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from asset.real_size import RealSize
from client_worker.config import PhotoCheckMode, QualityCheckMode
from client_worker.errors import PermanentJobError
from client_worker.jobs import ids
from client_worker.jobs.limits import shown
from client_worker.pipeline.job_size import size_from_metadata
from client_worker.pipeline.presets import Preset, requested_preset

JOB_OPTION = "job_option"
"""The error type of a bad job option, whose message stands on its own."""
IMAGE_URLS_MAX = "image_urls_max"
"""The key of the validation context that bounds how many image URLs a job may list (``IMAGE_URLS_MAX``)."""


class Job(BaseModel):
    """A validated job payload (the guide's "Job Payload Structure"); unknown keys are kept.

    Each id is checked against its grammar and limit in `client_worker.jobs.ids`.
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)

    job_id: str = Field(min_length=1, validation_alias=AliasChoices("job_id", "jobId"))
    shop: str = Field(min_length=1, validation_alias=AliasChoices("shop", "shopDomain", "shop_domain"))
    product_id: str = Field(min_length=1, validation_alias=AliasChoices("product_id", "productId"))
    image_urls: list[str] = Field(min_length=1, validation_alias=AliasChoices("image_urls", "imageUrls"))
    variant_id: str | None = Field(default=None, validation_alias=AliasChoices("variant_id", "variantId"))
    product_handle: str | None = Field(
        default=None, validation_alias=AliasChoices("product_handle", "productHandle")
    )
    metadata: dict[str, Any] = Field(default_factory=dict)
    quality: Any = Field(default=None, validation_alias=AliasChoices("quality", "preset"))
    """The preset as a `send_task(kwargs=...)` caller names it; `requested_preset` is what it means."""
    requested_preset: Preset | None = Field(default=None, validate_default=True)
    """The preset the job asks for (`quality`, else `metadata.quality`); None leaves the worker's default."""
    real_size: RealSize | None = Field(default=None, validate_default=True)
    """The product's real size from `metadata.size`; None leaves the worker's default."""
    photo_check_mode: PhotoCheckMode | None = Field(default=None, validate_default=True)
    """How strictly the job's photos are checked (`photo_check_mode`, else `metadata.photo_check_mode`): a
    backend that was refused a photo may ask for `warn` to have it meshed anyway; None leaves
    `PHOTO_CHECK`."""
    quality_check_mode: QualityCheckMode | None = Field(default=None, validate_default=True)
    """What the check of the job's asset against its photo decides (`quality_check_mode`, else
    `metadata.quality_check_mode`): a backend may ask for `strict` where a broken model must never
    reach the shop, or `report` to only hear the measures; None leaves `QUALITY_CHECK`."""

    @field_validator("job_id", "product_id", "variant_id", mode="before")
    @classmethod
    def _id_as_text(cls, value: object) -> object:
        """Numeric ids from JavaScript producers arrive as numbers; they are ids all the same."""
        if isinstance(value, int) and not isinstance(value, bool):
            return ids.id_text(value)
        return value

    @field_validator("job_id")
    @classmethod
    def _job_id(cls, value: str) -> str:
        return ids.job_id(value)

    @field_validator("shop")
    @classmethod
    def _shop(cls, value: str) -> str:
        return ids.shop(value.strip())

    @field_validator("product_id")
    @classmethod
    def _product_id(cls, value: str) -> str:
        ids.shopify_number(value.strip())
        return value.strip()

    @field_validator("variant_id")
    @classmethod
    def _variant_id(cls, value: str | None) -> str | None:
        """Optional: an empty one is no variant."""
        if value is None or not value.strip():
            return None
        ids.shopify_number(value.strip())
        return value.strip()

    @field_validator("product_handle")
    @classmethod
    def _handle(cls, value: str | None) -> str | None:
        return None if value is None else ids.product_handle(value)

    @field_validator("image_urls", mode="before")
    @classmethod
    def _urls(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, str):
            raise ValueError("must be a list of URL strings, e.g. [\"https://cdn.shopify.com/...jpg\"], not a string")
        if isinstance(value, list):
            if not value:
                raise ValueError("is empty; list at least one product image URL")
            most = (info.context or {}).get(IMAGE_URLS_MAX)
            if most is not None and len(value) > most:
                raise ValueError(f"lists {len(value)} URLs, more than the {most} a job may have (IMAGE_URLS_MAX): "
                                 f"send the product's {most} best photos, best first")
            for index, item in enumerate(value):
                if not isinstance(item, str) or not item.strip():
                    raise ValueError(f"item {index} is {shown(item)}; every item must be a non-empty URL string")
            return [item.strip() for item in value]
        return value

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata(cls, value: object) -> object:
        return {} if value is None else value

    @field_validator("requested_preset", mode="plain")
    @classmethod
    def _preset(cls, _given: object, info: ValidationInfo) -> Preset | None:
        requested = _keyword_or_metadata(info.data.get("quality"), info, "quality")
        return None if requested is None else _option(requested_preset, requested)

    @field_validator("photo_check_mode", mode="plain")
    @classmethod
    def _photo_check_mode(cls, given: object, info: ValidationInfo) -> PhotoCheckMode | None:
        requested = _keyword_or_metadata(given, info, "photo_check_mode")
        return None if requested is None else _option(photo_check_mode, requested)

    @field_validator("quality_check_mode", mode="plain")
    @classmethod
    def _quality_check_mode(cls, given: object, info: ValidationInfo) -> QualityCheckMode | None:
        requested = _keyword_or_metadata(given, info, "quality_check_mode")
        return None if requested is None else _option(quality_check_mode, requested)

    @field_validator("real_size", mode="plain")
    @classmethod
    def _size(cls, _given: object, info: ValidationInfo) -> RealSize | None:
        return _option(size_from_metadata, info.data.get("metadata"))


def photo_check_mode(value: object) -> PhotoCheckMode:
    """A job's `photo_check_mode`, as `PHOTO_CHECK` spells the modes (case and spaces aside)."""
    return _mode("photo_check_mode", get_args(PhotoCheckMode), value)


def quality_check_mode(value: object) -> QualityCheckMode:
    """A job's `quality_check_mode`, as `QUALITY_CHECK` spells the modes (case and spaces aside)."""
    return _mode("quality_check_mode", get_args(QualityCheckMode), value)


def _mode(option: str, modes: tuple[str, ...], value: object) -> Any:
    mode = value.strip().lower() if isinstance(value, str) else value
    if mode not in modes:
        raise PermanentJobError(f"{option} must be one of {', '.join(modes)}, got {shown(value)}")
    return mode


def _keyword_or_metadata(keyword: object, info: ValidationInfo, key: str) -> object:
    """A job option given as a top-level keyword, else as ``metadata[key]``. The guide's payload has
    neither, so both places are accepted: a top-level keyword is what `send_task(kwargs=...)` callers
    add, `metadata` is where the backend passes extras."""
    metadata = info.data.get("metadata")
    if keyword is None and isinstance(metadata, Mapping):
        return metadata.get(key)
    return keyword


def _option(parse: Any, value: object) -> Any:
    """``parse(value)``, its `PermanentJobError` turned into a `JOB_OPTION` validation error."""
    try:
        return parse(value)
    except PermanentJobError as error:
        raise PydanticCustomError(JOB_OPTION, "{reason}", {"reason": str(error)}) from None
