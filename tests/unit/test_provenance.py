"""Provenance in published files: the IPTC Digital Source Type in XMP per job kind, no EXIF/GPS, optional C2PA."""

import datetime
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image

from functions.adapters.local.publisher import FolderPublisher
from functions.stages.provenance import (
    ALGORITHMICALLY_ENHANCED,
    COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
    TRAINED_ALGORITHMIC_MEDIA,
    C2paSigning,
    alt_text,
    embed_xmp,
    mark_image,
    xmp_packet,
)
from functions.stages.publish import publish_decisions
from schemas import GenerationProvenance, ReviewDecision, ReviewItem, ReviewItemDetails, Verdict

IPTC_EXT = "{http://iptc.org/std/Iptc4xmpExt/2008-02-29/}DigitalSourceType"
GPS_IFD = 0x8825


def encoded(fmt: str, mode: str = "RGB", exif_with_gps: bool = False, **options) -> bytes:
    image = Image.new(mode, (64, 48), (200, 30, 40, 128)[: len(mode)])
    image.putpixel((3, 4), (0, 255, 0, 255)[: len(mode)])
    if exif_with_gps:
        exif = Image.Exif()
        exif[0x010F] = "Camera maker"
        exif.get_ifd(GPS_IFD)[2] = (51.0, 30.0, 0.0)  # GPSLatitude
        options["exif"] = exif
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def source_type_in(data: bytes) -> str | None:
    """Read the file back the way any XMP reader would: the packet Pillow finds, parsed as XML."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        packet = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
    if packet is None:
        return None
    root = ET.fromstring(packet if isinstance(packet, str) else packet.decode())
    for element in root.iter():
        if IPTC_EXT in element.attrib:
            return element.attrib[IPTC_EXT]
    return None


def pixels(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        return image.tobytes()


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("packshot", ALGORITHMICALLY_ENHANCED),
        ("ghost_mannequin", COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA),
        ("lifestyle", COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA),
        ("try_on", COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA),
        ("generated_scene", TRAINED_ALGORITHMIC_MEDIA),
    ],
)
@pytest.mark.parametrize(
    ("fmt", "mode", "options"),
    [
        ("JPEG", "RGB", {"quality": 90}),
        ("PNG", "RGBA", {}),
        ("WEBP", "RGB", {"quality": 80}),
        ("WEBP", "RGBA", {"lossless": True}),
    ],
)
def test_each_kind_reads_back_with_its_iptc_source_type_and_the_same_pixels(kind, expected, fmt, mode, options):
    # Given an encoded image of each format we publish
    original = encoded(fmt, mode, **options)

    # When it is marked for publishing as the output of `kind`
    marked = mark_image(original, f"image/{fmt.lower()}", kind, {"engine": kind, "model-version": "tiny@1"})

    # Then an XMP reader finds the right IPTC Digital Source Type, and the pixels are exactly the original's
    assert source_type_in(marked) == expected
    assert pixels(marked) == pixels(original)
    with Image.open(io.BytesIO(marked)) as image:
        assert image.mode == mode


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_exif_and_gps_in_the_input_are_gone_from_the_published_file(fmt):
    # Given a file that somehow carries EXIF with a GPS position
    original = encoded(fmt, exif_with_gps=True)
    with Image.open(io.BytesIO(original)) as image:
        assert image.getexif().get_ifd(GPS_IFD)

    # When it is marked
    marked = embed_xmp(original, xmp_packet(TRAINED_ALGORITHMIC_MEDIA))

    # Then no EXIF and no GPS remain, and the XMP packet is the only metadata
    with Image.open(io.BytesIO(marked)) as image:
        assert not image.getexif() and not image.getexif().get_ifd(GPS_IFD)
        assert "exif" not in image.info
    assert b"Exif\x00" not in marked and b"Camera maker" not in marked
    assert source_type_in(marked) == TRAINED_ALGORITHMIC_MEDIA


def test_marking_twice_replaces_the_packet_and_keeps_the_jpeg_scan_bytes():
    # Given a JPEG already marked as a packshot
    original = encoded("JPEG", quality=85)
    once = embed_xmp(original, xmp_packet(ALGORITHMICALLY_ENHANCED))

    # When it is marked again as generated
    twice = embed_xmp(once, xmp_packet(TRAINED_ALGORITHMIC_MEDIA))

    # Then one packet remains, the new one, and the compressed image data is byte for byte the original's
    assert twice.count(b"http://ns.adobe.com/xap/1.0/\x00") == 1
    assert source_type_in(twice) == TRAINED_ALGORITHMIC_MEDIA
    scan = original.index(b"\xff\xda")
    assert twice.endswith(original[scan:])


def test_a_file_that_is_no_image_we_publish_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="only JPEG, PNG and WebP"):
        embed_xmp(b"GIF89a....", xmp_packet(TRAINED_ALGORITHMIC_MEDIA))


def test_alt_text_says_ai_generated_only_for_generated_images_and_only_when_the_brand_asks():
    assert alt_text("Linen shirt", "lifestyle", disclose=True) == "Linen shirt (AI-generated image)"
    assert alt_text("Linen shirt", "try_on", disclose=True, disclosure_text="Generated") == "Linen shirt (Generated)"
    assert alt_text("Linen shirt", "packshot", disclose=True) == "Linen shirt"
    assert alt_text("Linen shirt", "lifestyle", disclose=False) == "Linen shirt"


def approved_item(generated: str, kind: str, name: str) -> tuple[ReviewItem, ReviewDecision]:
    item = ReviewItem(
        item_id=f"img-{kind}",
        sku="SKU-1",
        original="file:///in/front.jpg",
        generated=generated,
        job_kind=kind,
        details=ReviewItemDetails(
            publish_name=name,
            provenance=GenerationProvenance(engine=kind, model_version="tiny@1", adapter_version="brand=v3"),
        ),
    )
    decision = ReviewDecision(
        item_id=item.item_id,
        verdict=Verdict.APPROVED,
        reviewer="reviewer@example.com",
        decided_at=datetime.datetime(2026, 11, 30, 12, tzinfo=datetime.UTC),
    )
    return item, decision


def test_the_publish_stage_marks_what_lands_in_approved_and_a_rerun_finds_the_same_bytes(tmp_path):
    # Given an approved packshot (JPEG) and an approved lifestyle image (PNG)
    files = {"mem://packshot.jpg": encoded("JPEG"), "mem://scene.png": encoded("PNG", "RGBA")}
    pairs = [
        approved_item("mem://packshot.jpg", "packshot", "SKU-1/front.packshot.jpg"),
        approved_item("mem://scene.png", "lifestyle", "SKU-1/front.lifestyle/lifestyle_0.png"),
    ]
    items, decisions = [p[0] for p in pairs], [p[1] for p in pairs]

    # When they are published to approved/ twice (a re-run)
    def publish():
        return publish_decisions(
            "acme", "r" * 16, items, decisions, read_bytes=files.__getitem__, publisher=FolderPublisher(tmp_path)
        )

    first, again = publish(), publish()

    # Then approved/ holds marked files with their source types, and the re-run finds the same bytes there
    assert source_type_in((tmp_path / "approved/SKU-1/front.packshot.jpg").read_bytes()) == ALGORITHMICALLY_ENHANCED
    scene = (tmp_path / "approved/SKU-1/front.lifestyle/lifestyle_0.png").read_bytes()
    assert source_type_in(scene) == COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA
    assert b"adapter-version=brand=v3" in scene and b"reviewer@example.com" not in scene
    assert len(first.published) == 2 and again.published == () and len(again.already_published) == 2


def signing_chain(tmp_path: Path) -> tuple[Path, Path]:
    """A CA and an end-entity certificate (C2PA refuses self-signed signers), written as PEM files."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(common_name: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test"),
            ]
        )

    def usage(signs_certificates: bool) -> x509.KeyUsage:
        return x509.KeyUsage(True, False, False, False, False, signs_certificates, signs_certificates, False, False)

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def certificate(subject: str, public_key, is_ca: bool) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name("Test CA"))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
            .add_extension(usage(is_ca), critical=True)
        )

    ca = certificate("Test CA", ca_key.public_key(), True).sign(ca_key, hashes.SHA256())
    leaf = (
        certificate("Catalog signer", key.public_key(), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    chain, key_file = tmp_path / "chain.pem", tmp_path / "signer.key"
    chain.write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return chain, key_file


@pytest.mark.parametrize(("fmt", "kind"), [("JPEG", "lifestyle"), ("PNG", "packshot")])
def test_a_configured_certificate_adds_a_valid_c2pa_manifest_naming_model_adapter_and_approval(tmp_path, fmt, kind):
    c2pa = pytest.importorskip("c2pa")
    # Given a signing certificate chain and key from configuration
    signing = C2paSigning.from_files(*signing_chain(tmp_path))
    mime = f"image/{fmt.lower()}"

    # When an approved image is marked
    marked = mark_image(
        encoded(fmt),
        mime,
        kind,
        {"model-version": "sdxl-tiny@1", "adapter-version": "brand=v3"},
        approval={"approved-by": "reviewer@example.com", "decided-at": "2026-11-30T12:00:00+00:00"},
        title="SKU-1/front.jpg",
        c2pa_signing=signing,
    )

    # Then a C2PA reader validates the manifest, which names the model, adapter version and approval with the
    # same source type as the XMP packet, which is still there
    reader = c2pa.Reader(mime, io.BytesIO(marked))
    assert reader.get_validation_state() == "Valid"
    manifest = json.loads(reader.json())
    active = manifest["manifests"][manifest["active_manifest"]]
    action = active["assertions"][0]["data"]["actions"][0]
    assert action["digitalSourceType"] == source_type_in(marked)
    assert action["parameters"]["model-version"] == "sdxl-tiny@1"
    assert action["parameters"]["adapter-version"] == "brand=v3"
    assert action["parameters"]["approval.approved-by"] == "reviewer@example.com"


def test_a_missing_certificate_file_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"certificate .*chain\.pem: no such file"):
        C2paSigning.from_files(tmp_path / "chain.pem", tmp_path / "key.pem")
