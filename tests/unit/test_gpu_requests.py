"""Which GPU jobs a photo gets, and their requests: one builder and one id scheme for both runtimes, seeds from the
photo alone, and the brand's profile on every GPU job."""

import pytest

from functions.errors import ConfigurationError
from functions.stages.gpu_requests import build_job_requests, job_id, job_seed, jobs_for, parse_jobs
from schemas import BrandProfile, GarmentCategory, JobKind, PreparedFiles, ProductSidecar

IMAGE_ID = "0123456789abcdef"
SHA = "ab" * 32
ALL_GPU = (JobKind.GHOST_MANNEQUIN, JobKind.TRY_ON, JobKind.LIFESTYLE)
PROFILE = BrandProfile.model_validate(
    {
        "brand": "acme",
        "adapters": [{"name": "acme-ss27", "uri": "s3://catalog-brands/brands/acme/ss27.safetensors", "version": "v3"}],
        "prompt_templates": {"tops": "{title}, studio"},
    }
)


def files(prefix: str, normalised: bool = True) -> PreparedFiles:
    return PreparedFiles(
        cutout=f"{prefix}cutout.png",
        mask=f"{prefix}mask.png",
        packshot=f"{prefix}packshot.jpg",
        normalised=f"{prefix}normalised.png" if normalised else None,
    )


def build(
    kinds=(JobKind.PACKSHOT, *ALL_GPU),
    prefix: str = f"s3://catalog-work/prepared/{IMAGE_ID}/",
    output_prefix: str = f"s3://catalog-work/gpu/outputs/{IMAGE_ID}/",
    profile: BrandProfile | None = PROFILE,
    sidecar: ProductSidecar | None = None,
    image_id: str = IMAGE_ID,
    content_sha256: str = SHA,
):
    return build_job_requests(
        image_id=image_id,
        content_sha256=content_sha256,
        brand="acme",
        sku="SKU-1",
        sidecar=sidecar,
        kinds=kinds,
        files=files(prefix),
        output_prefix=output_prefix,
        profile=profile,
    )


def test_one_request_per_gpu_kind_and_none_for_the_packshot():
    # Given a photo asking for the packshot and every GPU job, When the requests are built
    requests = build()
    # Then there is one request per GPU kind (the packshot is made on the CPU), in the order asked
    assert [request.kind for request in requests] == list(ALL_GPU)
    assert build(kinds=(JobKind.PACKSHOT,)) == ()


def test_job_ids_are_the_image_id_and_the_kind_with_dashes():
    # Given the requests for every kind, Then each id is `<image id>-<kind with dashes>`, safe as an InferenceId
    ids = [request.job_id for request in build()]
    assert ids == [f"{IMAGE_ID}-ghost-mannequin", f"{IMAGE_ID}-try-on", f"{IMAGE_ID}-lifestyle"]
    assert job_id(IMAGE_ID, JobKind.TRY_ON) == f"{IMAGE_ID}-try-on"
    assert all("_" not in request.job_id.removeprefix(IMAGE_ID) for request in build())


def test_seeds_come_from_the_photo_and_kind_only_not_the_runtime_or_prefix():
    # Given the same photo prepared locally (file:// prefixes, a local image id) and on AWS (s3:// prefixes)
    local = build(
        prefix="file:///tmp/out/SKU-1/front.",
        output_prefix="file:///tmp/out/jobs/SKU-1/front/",
        image_id="local-image-0001",
    )
    aws = build()

    # Then every kind gets the same seed on both runtimes, so the same images come out
    assert [request.seed for request in local] == [request.seed for request in aws]
    # And the kinds get different seeds, and another photo gets other seeds
    assert len({request.seed for request in aws}) == len(ALL_GPU)
    other_photo = build(content_sha256="cd" * 32)
    assert all(a.seed != b.seed for a, b in zip(aws, other_photo, strict=True))
    # And a seed is a valid non-negative 63-bit value
    assert all(0 <= job_seed(SHA, kind) < 2**63 for kind in JobKind)


def test_every_gpu_kind_gets_the_brand_profile():
    # Given a brand with a profile, When the requests are built
    requests = build()
    # Then every GPU job carries the whole resolved profile, as JSON
    for request in requests:
        assert BrandProfile.model_validate(request.params["brand_profile"]) == PROFILE


def test_without_a_profile_no_job_carries_one():
    # Given a brand without a profile, When the requests are built, Then no job carries a brand profile
    assert all("brand_profile" not in request.params for request in build(profile=None))


def test_each_kind_reads_the_file_it_needs_and_writes_under_its_own_prefix():
    # Given the prepared files, When the requests are built
    ghost, try_on, lifestyle = build()
    # Then the ghost mannequin reads the normalised photo, try-on and lifestyle the cutout
    assert ghost.inputs == {
        "image": f"s3://catalog-work/prepared/{IMAGE_ID}/normalised.png",
        "mask": f"s3://catalog-work/prepared/{IMAGE_ID}/mask.png",
    }
    assert try_on.inputs == {"garment": f"s3://catalog-work/prepared/{IMAGE_ID}/cutout.png"}
    assert lifestyle.inputs == {"cutout": f"s3://catalog-work/prepared/{IMAGE_ID}/cutout.png"}
    # And each writes under `<output prefix><kind>`
    assert [r.output_prefix for r in (ghost, try_on, lifestyle)] == [
        f"s3://catalog-work/gpu/outputs/{IMAGE_ID}/ghost_mannequin",
        f"s3://catalog-work/gpu/outputs/{IMAGE_ID}/try_on",
        f"s3://catalog-work/gpu/outputs/{IMAGE_ID}/lifestyle",
    ]


def test_a_ghost_mannequin_job_without_the_normalised_photo_is_refused():
    # Given prepared files without the normalised photo, When a ghost-mannequin request is built, Then it is refused
    with pytest.raises(ValueError, match="normalised"):
        build_job_requests(
            image_id=IMAGE_ID,
            content_sha256=SHA,
            brand="acme",
            sku="SKU-1",
            sidecar=None,
            kinds=(JobKind.GHOST_MANNEQUIN,),
            files=files("s3://catalog-work/prepared/x/", normalised=False),
            output_prefix="s3://catalog-work/gpu/outputs/x/",
            profile=None,
        )


def test_the_lifestyle_job_gets_the_products_words_and_every_job_its_category():
    # Given a sidecar with a title, colour, collection and category
    sidecar = ProductSidecar(title="Linen shirt", colour="sand", collection="SS27", category=GarmentCategory.TOPS)

    # When the requests are built
    ghost, try_on, lifestyle = build(sidecar=sidecar, profile=None)

    # Then only the lifestyle prompt gets the product's words, and every job knows the category
    assert lifestyle.params == {"product": {"title": "Linen shirt", "colour": "sand", "collection": "SS27"}}
    assert ghost.params == {} and try_on.params == {}
    assert {r.category for r in (ghost, try_on, lifestyle)} == {GarmentCategory.TOPS}


def test_parse_jobs_always_includes_the_packshot_and_names_unknown_jobs():
    # Given a list of jobs as a flag or setting gives it
    # Then the packshot comes first, duplicates and blanks are dropped
    assert parse_jobs("lifestyle, ,try_on,lifestyle") == (JobKind.PACKSHOT, JobKind.LIFESTYLE, JobKind.TRY_ON)
    assert parse_jobs("") == (JobKind.PACKSHOT,)
    # And an unknown job stops the run, naming it and the choices
    with pytest.raises(ConfigurationError, match="teleport") as raised:
        parse_jobs("packshot,teleport")
    assert "lifestyle" in str(raised.value)


def test_a_sidecar_naming_jobs_wins_over_the_default():
    default = (JobKind.LIFESTYLE,)
    # Given a sidecar that names its jobs, Then they are used (with the packshot)
    assert jobs_for(ProductSidecar(jobs=(JobKind.TRY_ON,)), default) == (JobKind.PACKSHOT, JobKind.TRY_ON)
    # Given a sidecar that names none, or no sidecar, Then the default is used
    assert jobs_for(ProductSidecar(title="Tee"), default) == (JobKind.PACKSHOT, JobKind.LIFESTYLE)
    assert jobs_for(None, default) == (JobKind.PACKSHOT, JobKind.LIFESTYLE)


def test_the_runs_category_is_the_default_for_photos_whose_sidecar_names_none():
    # Given the run's --category tops
    from functions.stages.gpu_requests import sidecar_with_category

    # When a photo has no sidecar, or one that names no category
    for sidecar in (None, ProductSidecar(title="Tee")):
        requests = build(kinds=(JobKind.TRY_ON,), sidecar=sidecar_with_category(sidecar, GarmentCategory.TOPS))
        # Then its try-on request is for tops (and a sidecar's other fields and job choice are kept)
        assert requests[0].category is GarmentCategory.TOPS
    kept = sidecar_with_category(ProductSidecar(title="Tee"), GarmentCategory.TOPS)
    assert kept is not None and kept.title == "Tee" and "jobs" not in kept.model_fields_set
    # And a sidecar's own category wins, even `other`
    for own in (GarmentCategory.DRESSES, GarmentCategory.OTHER):
        sidecar = sidecar_with_category(ProductSidecar(category=own), GarmentCategory.TOPS)
        assert build(kinds=(JobKind.TRY_ON,), sidecar=sidecar)[0].category is own
    # And without --category nothing changes
    assert sidecar_with_category(None, None) is None
    assert build(kinds=(JobKind.TRY_ON,), sidecar=None)[0].category is GarmentCategory.OTHER
    # And build_job_requests takes the default directly too (for callers without a sidecar to fill)
    direct = build_job_requests(
        image_id=IMAGE_ID,
        content_sha256=SHA,
        brand="acme",
        sku="SKU-1",
        sidecar=None,
        kinds=(JobKind.TRY_ON,),
        files=files(f"s3://catalog-work/prepared/{IMAGE_ID}/"),
        output_prefix=f"s3://catalog-work/gpu/outputs/{IMAGE_ID}/",
        profile=None,
        default_category=GarmentCategory.BOTTOMS,
    )
    assert direct[0].category is GarmentCategory.BOTTOMS
