"""Per-image wall time and peak RSS of intake + background removal + cutout + packshot on a 24 MP photo.

Compares, in one run and on one photo:
  keyer-today       today's code path at f423e76 (the frozen bench/baseline_*.py) with the backdrop keyer
  keyer             our pipeline now, with the weight-free backdrop keyer
  rembg-tiny-today  today's code path with a rembg session on a tiny ONNX net (exported here, like the tests do)
  rembg-tiny        our pipeline now, same net
  rembg.remove      plain `rembg.remove(image, session=new_session(...))` as rembg's README shows, same tiny net,
                    saving the PNG it returns: the reference
Our variants run the whole prepare stage as both runtimes call it (`prepare_image`): every derived file is encoded
and written (the full-size cutout and mask PNGs, the 2000 px packshot JPEG, three previews). Each variant runs in its
own process so peak RSS is its own. Wall time counts every core the stage uses (the encoders run side by side where
the process has more than one); CPU time sums them. Prints figures and ratios; asserts nothing.

    .venv/bin/python bench/bench_background.py [--megapixels 24] [--repeat 3]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = ("keyer-today", "keyer", "rembg-tiny-today", "rembg-tiny", "rembg.remove")


def child(variant: str, photo: Path, model: Path, repeat: int, out_dir: Path) -> dict[str, float]:
    """Runs inside the measured process."""
    import resource

    data = photo.read_bytes()
    started = time.perf_counter()
    if variant == "rembg.remove":
        import os

        # rembg only accepts a custom model that lies under its home folder.
        os.environ["U2NET_HOME"] = str(model.parent)
        from PIL import Image
        from rembg import new_session, remove

        session = new_session("u2net_custom", model_path=str(model))

        def once() -> None:
            output = remove(Image.open(photo), session=session)
            output.save(out_dir / "rembg-remove.png")
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from functions.adapters.local.files import FileStorage, file_uri
        from functions.stages.background import background_remover_from_spec
        from functions.stages.brand import resolve_brand
        from functions.stages.intake import IntakeLimits

        if variant.endswith("-today"):
            from bench.baseline_keyer import BackdropKeyer
            from bench.baseline_packshot import PackshotSettings
            from bench.baseline_prepare import PhotoToPrepare, PrepareTargets, prepare_image

            remover = BackdropKeyer() if variant == "keyer-today" else background_remover_from_spec(f"rembg:{model}")
        else:
            from functions.allocator import keep_image_buffers
            from functions.blas_threads import one_blas_thread
            from functions.stages.packshot import PackshotSettings  # type: ignore[assignment]
            from functions.stages.prepare import (  # type: ignore[assignment]
                PhotoToPrepare,
                PrepareTargets,
                prepare_image,
            )

            keep_image_buffers()  # the process set up as the prepare Lambda and `catalog run`'s workers set theirs
            one_blas_thread()
            remover = background_remover_from_spec("backdrop" if variant == "keyer" else f"rembg:{model}")
        storage = FileStorage([out_dir])
        prefix = file_uri(out_dir / variant) + "."
        brand = resolve_brand("bench", None, storage)
        to_prepare = PhotoToPrepare(
            data=data,
            image_id="bench-photo-24mp",
            source=photo.name,
            filename=photo.name,
            sku="bench",
            publish_stem="bench/photo",
            content_sha256="0" * 64,
            sidecar=None,
            kinds=(),
        )

        def once() -> None:
            # The prepare stage as both runtimes call it: intake, background, cutout, packshot and checks, then every
            # derived file encoded and written (cutout and mask PNGs, the 2000 px packshot JPEG, three previews).
            prepare_image(
                to_prepare,
                brand,
                remover=remover,
                packshot_settings=PackshotSettings(),
                limits=IntakeLimits(),
                storage=storage,
                targets=PrepareTargets(files_prefix=prefix, previews_prefix=prefix + "preview-", jobs_prefix=prefix),
            )

    setup_s = time.perf_counter() - started
    rss_before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times, cpu_times = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        once()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    return {
        "setup_s": setup_s,
        "first_s": times[0],
        "median_s": sorted(times)[len(times) // 2],
        # CPU seconds (all threads): on a machine other work shares, steadier than wall time.
        "median_cpu_s": sorted(cpu_times)[len(cpu_times) // 2],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_setup_mb": rss_before_mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megapixels", type=float, default=24.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma-separated subset of: " + ", ".join(VARIANTS)
    )
    parser.add_argument("--child", choices=VARIANTS)
    parser.add_argument("--photo", type=Path)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.photo, args.model, args.repeat, args.out)))
        return

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from functions.local.synthetic_photos import render_product_photo
    from tests.tiny_onnx import export_tiny_segmentation_onnx

    work = Path(tempfile.mkdtemp(prefix="bench-background-"))
    height = int((args.megapixels * 1e6 * 1.5) ** 0.5)  # 2:3 portrait, like a DSLR shot turned upright
    width = int(height / 1.5)
    photo = work / "photo-24mp.jpg"
    render_product_photo("tshirt", (170, 30, 40), (244, 244, 242), size=(width, height), seed=7).image.save(
        photo, quality=92
    )
    model = export_tiny_segmentation_onnx(work / "tiny.onnx")
    print(f"photo: {width}x{height} ({width * height / 1e6:.1f} MP, {photo.stat().st_size / 1e6:.1f} MB JPEG)")
    print(f"repeat: {args.repeat} per variant, each variant in a fresh process; python {sys.version.split()[0]}")

    results = {}
    for variant in [v for v in VARIANTS if v in args.variants.split(",")]:
        command = [sys.executable, __file__, "--child", variant, "--photo", str(photo), "--model", str(model)]
        command += ["--repeat", str(args.repeat), "--out", str(work)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        results[variant] = json.loads(done.stdout.strip().splitlines()[-1])

    base = results.get("rembg.remove", {"median_s": float("nan"), "median_cpu_s": float("nan")})
    print(
        f"\n{'variant':<18}{'median s':>10}{'first s':>10}{'setup s':>10}{'peak RSS MB':>13}"
        f"{'time vs rembg.remove':>22}{'faster than today':>19}"
        f"{'CPU s':>8}{'CPU vs rembg.remove':>21}{'less CPU than today':>21}"
    )
    for variant, r in results.items():
        today = results.get(f"{variant}-today")
        speedup = f"{today['median_s'] / r['median_s']:>18.2f}x" if today else f"{'':>19}"
        cpu_speedup = f"{today['median_cpu_s'] / r['median_cpu_s']:>20.2f}x" if today else ""
        print(
            f"{variant:<18}{r['median_s']:>10.2f}{r['first_s']:>10.2f}{r['setup_s']:>10.2f}{r['peak_rss_mb']:>13.0f}"
            f"{r['median_s'] / base['median_s']:>21.2f}x{speedup}"
            f"{r['median_cpu_s']:>8.2f}{r['median_cpu_s'] / base['median_cpu_s']:>20.2f}x{cpu_speedup}"
        )
    print("\nOur variants are the whole prepare stage: intake (sniff, bomb check, EXIF, sRGB), background, the cutout")
    print("and mask PNGs, a 2000 px packshot JPEG and three previews; rembg.remove only removes the background and")
    print("saves its PNG.")


if __name__ == "__main__":
    main()
