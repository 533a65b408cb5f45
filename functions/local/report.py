"""`OUT/report.html`: a contact sheet a merchandiser opens in a browser, failures first.

Self-contained (inline CSS, relative links to the run's own thumbnails and outputs); every text from a file name,
a sidecar or an error is escaped.
"""

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from urllib.parse import quote

from schemas import JobResult, ManifestEntry, QualityFlag, RunManifest, Severity, Status

TINY_MODELS_NOTE = (
    "These images were made with tiny random models (--models tiny): they are noise by design. They show that the "
    "flow works end to end, not what real weights would paint."
)

_STYLE = """
:root { color-scheme: light; font-family: system-ui, -apple-system, "Segoe UI", sans-serif; }
body { margin: 0 auto; max-width: 1280px; padding: 1.5rem; color: #1d1d1f; background: #fafafa; }
h1 { font-size: 1.5rem; margin: 0 0 .25rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
.summary { display: flex; gap: 1rem; flex-wrap: wrap; margin: 1rem 0; }
.count { background: #fff; border: 1px solid #ddd; border-radius: 8px; padding: .6rem 1rem; }
.count b { display: block; font-size: 1.4rem; }
.failed b { color: #b00020; } .ok b { color: #16794c; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; padding: .5rem; border-bottom: 1px solid #eee; vertical-align: top; }
.sheet { display: grid; grid-template-columns: repeat(3, minmax(0, 1fr)); gap: .75rem; }
.photo { background: #fff; border: 1px solid #ddd; border-radius: 8px; padding: .75rem; margin-bottom: 1rem; }
.photo h3 { font-size: .95rem; margin: 0 0 .5rem; overflow-wrap: anywhere; }
figure { margin: 0; } figcaption { font-size: .8rem; color: #555; margin-top: .25rem; }
figure a { display: flex; align-items: center; justify-content: center; height: 260px; background: #f4f4f4;
  border-radius: 4px; }
figure img { max-width: 100%; max-height: 260px; width: auto; height: auto; display: block; }
.checker { background: repeating-conic-gradient(#ddd 0% 25%, #fff 0% 50%) 50% / 20px 20px; }
.flags { list-style: none; padding: 0; margin: .5rem 0 0; font-size: .85rem; }
.flags li { padding: .2rem .5rem; border-radius: 4px; margin-top: .25rem; }
.warning { background: #fff4e5; } .info { background: #eef4ff; }
.notes { font-size: .8rem; color: #555; margin: .4rem 0 0; }
code { background: #f1f1f1; padding: 0 .25rem; border-radius: 3px; }
@media (max-width: 700px) { .sheet { grid-template-columns: 1fr; } }
"""


def _href(path: str) -> str:
    return escape(quote(path))


def _figure(entry: ManifestEntry, thumb: str, full: str, caption: str, checker: bool = False) -> str:
    if thumb not in entry.outputs:
        return "<figure></figure>"
    klass = ' class="checker"' if checker else ""
    target = _href(entry.outputs.get(full, entry.outputs[thumb]))
    return (
        f'<figure><a href="{target}"><img{klass} src="{_href(entry.outputs[thumb])}" '
        f'alt="{escape(caption)} of {escape(entry.source)}" loading="lazy"></a>'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def _relative(uri: str, out_dir: str) -> str:
    """`file:///abs/OUT/x.png` -> `x.png` when under OUT (the report sits in OUT), else the URI as is."""
    prefix = "file://" + out_dir.rstrip("/") + "/"
    return uri[len(prefix) :] if uri.startswith(prefix) else uri


def _job_figures(result: JobResult, out_dir: str) -> str:
    if result.status is Status.FAILED:
        reason = result.error.message if result.error else "no reason given"
        return f'<p class="notes"><b>{escape(result.kind.value)}</b> failed: {escape(reason)}</p>'
    figures = []
    for output in result.outputs:
        href = _href(_relative(output.uri, out_dir))
        caption = f"{result.kind.value}" + (f" · seed {output.seed}" if output.seed is not None else "")
        figures.append(
            f'<figure><a href="{href}"><img class="checker" src="{href}" alt="{escape(caption)}" loading="lazy"></a>'
            f"<figcaption>{escape(caption)}</figcaption></figure>"
        )
    return "".join(figures)


def _generated_warnings(entry: ManifestEntry) -> list[tuple[str, QualityFlag]]:
    """The automatic checks' warnings on the generated images (the tiny-model note is said once, at the top)."""
    return [
        (item.details.publish_name or item.item_id, flag)
        for item in entry.review_items
        if item.job_kind != "packshot"
        for flag in item.flags
        if flag.severity is Severity.WARNING
    ]


def _photo_card(entry: ManifestEntry, out_dir: str = "") -> str:
    flags = "".join(
        f'<li class="{"warning" if flag.severity is Severity.WARNING else "info"}">'
        f"<code>{escape(flag.code)}</code> {escape(flag.message)}</li>"
        for flag in entry.checks
    ) + "".join(
        f'<li class="warning"><code>{escape(flag.code)}</code> {escape(name)}: {escape(flag.message)}</li>'
        for name, flag in _generated_warnings(entry)
    )
    notes = []
    if entry.intake and entry.intake.notes:
        notes.append("Intake: " + "; ".join(entry.intake.notes))
    if entry.cutout:
        notes.append(f"Cutout: {entry.cutout.engine}, confidence {entry.cutout.confidence:.2f}")
    if entry.reused:
        notes.append("Reused from the previous run (same photo, same settings)")
    return (
        f'<section class="photo"><h3>{escape(entry.source)}</h3>'
        '<div class="sheet">'
        + _figure(entry, "thumb_original", "thumb_original", "Original (normalised)")
        + _figure(entry, "thumb_cutout", "cutout", "Cutout", checker=True)
        + _figure(
            entry, "thumb_packshot", "packshot", "Packshot", checker=entry.outputs.get("packshot", "").endswith(".png")
        )
        + "</div>"
        + (
            '<div class="sheet">' + "".join(_job_figures(result, out_dir) for result in entry.jobs) + "</div>"
            if entry.jobs
            else ""
        )
        + (f'<ul class="flags">{flags}</ul>' if flags else "")
        + "".join(f'<p class="notes">{escape(note)}</p>' for note in notes)
        + "</section>"
    )


@dataclass
class _Tally:
    """What the page's top says, counted in one pass over the entries, and where each SKU's cards are."""

    total: int = 0
    succeeded: int = 0
    failed: int = 0
    flagged: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    any_jobs: bool = False
    cards: dict[str, list[int]] = field(default_factory=dict)  # SKU -> positions of its entries with outputs


def _tally(entries: Iterable[ManifestEntry]) -> _Tally:
    tally = _Tally()
    for position, e in enumerate(entries):
        tally.total += 1
        tally.any_jobs = tally.any_jobs or bool(e.jobs)
        if e.status is Status.FAILED:
            tally.failed += 1
            if e.error:
                tally.codes[e.error.code] += 1
        elif e.status is Status.SUCCEEDED:
            tally.succeeded += 1
            if any(f.severity is Severity.WARNING for f in e.checks) or _generated_warnings(e):
                tally.flagged += 1
        # Every photo with outputs gets a card, also one whose GPU job failed after its packshot was written.
        if e.outputs:
            tally.cards.setdefault(e.sku, []).append(position)
    return tally


def report_parts(manifest: RunManifest) -> Iterator[str]:
    """The report page in pieces, entry by entry: a batch of 10,000 photos is never one string in memory.

    The entries are read a few times (counts first, then failures, then cards), one at a time, so `manifest.entries`
    may be entries read from disk (`ManifestEntriesOnDisk`).
    """
    entries = manifest.entries
    tally = _tally(entries)
    options = manifest.options

    yield (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Catalog run — {tally.succeeded} of {tally.total} succeeded</title>"
        f"<style>{_STYLE}</style></head><body>"
        "<h1>Catalog run report</h1>"
        f"<p>Input <code>{escape(manifest.input_root)}</code> · background <code>{escape(options.background)}</code>"
        f" · preset <code>{escape(options.preset)}</code> {options.size}px, fill {options.fill_ratio:.0%},"
        f" {escape(options.output_format)} · finished {manifest.finished_at:%Y-%m-%d %H:%M:%S} UTC"
        f" · catalog {escape(manifest.tool_version)}</p>"
        '<div class="summary">'
        f'<div class="count"><b>{tally.total}</b>files</div>'
        f'<div class="count ok"><b>{tally.succeeded}</b>succeeded</div>'
        f'<div class="count failed"><b>{tally.failed}</b>failed</div>'
        f'<div class="count"><b>{tally.flagged}</b>with warnings</div>'
        "</div>"
    )
    if manifest.options.models == "tiny" and tally.any_jobs:
        yield f'<p class="count" role="note">{escape(TINY_MODELS_NOTE)}</p>'

    if tally.failed:
        yield (
            f'<h2 id="failed">Failed ({tally.failed})</h2>'
            f"<p>{escape(', '.join(f'{code}: {n}' for code, n in tally.codes.most_common()))}</p>"
            "<table><thead><tr><th>File</th><th>SKU</th><th>Code</th><th>Reason</th></tr></thead>"
            "<tbody>"
        )
        for e in entries:
            if e.status is Status.FAILED:
                yield (
                    f"<tr><td>{escape(e.source)}</td><td>{escape(e.sku)}</td>"
                    f"<td><code>{escape(e.error.code if e.error else '')}</code></td>"
                    f"<td>{escape(e.error.message if e.error else '')}</td></tr>"
                )
        yield "</tbody></table>"

    out_dir = manifest.output_root or ""
    for sku, positions in tally.cards.items():
        yield f"<h2>{escape(sku)}</h2>"
        for position in positions:
            yield _photo_card(entries[position], out_dir)

    yield "</body></html>\n"


def render_report(manifest: RunManifest) -> str:
    """The whole report page as a string."""
    return "".join(report_parts(manifest))


def write_report(out_dir: Path, manifest: RunManifest, name: str = "report.html") -> Path:
    """Write the page piece by piece (`report_parts`)."""
    path = out_dir / name
    with path.open("w", encoding="utf-8") as file:
        file.writelines(report_parts(manifest))
    return path
