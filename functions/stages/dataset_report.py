"""`DS/report.html`: every photo's verdict with its reasons and thumbnail, the duplicate groups, the bucket plan and
the failure log. One self-contained page (inline CSS, no scripts); thumbnails are files under `DS/thumbs/`.
Everything that comes from a file name, a sidecar, a caption or a reviewer's note is escaped.
"""

from html import escape
from pathlib import Path

from functions.stages.dataset import REPORT_FILE, THUMBS_DIR
from functions.stages.feedback import by_reason
from schemas.dataset import DatasetManifest, DatasetPhoto, FailureCase, PhotoVerdict

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#222}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.4rem;text-align:left;
vertical-align:top}
img{max-width:128px;max-height:128px;background:#eee}
.kept{color:#116611;font-weight:600}.refused{color:#aa1111;font-weight:600}
.warning{background:#fff6d5;padding:.5rem}.muted{color:#666}code{font-size:12px}
"""


def _thumb(photo: DatasetPhoto, folder: Path) -> str:
    name = f"{THUMBS_DIR}/{photo.id}.jpg"
    if not (folder / name).is_file():
        return '<span class="muted">(not readable)</span>'
    return f'<img src="{escape(name)}" alt="{escape(photo.source)}" loading="lazy">'


def _photo_row(photo: DatasetPhoto, folder: Path) -> str:
    reasons = "".join(
        f"<li><code>{escape(f.code)}</code> {escape(f.message)}{'' if f.refuses else ' (note)'}</li>"
        for f in photo.findings
    )
    size = f"{photo.width}x{photo.height}" if photo.width else ""
    bucket = f"{photo.bucket[0]}x{photo.bucket[1]}" if photo.bucket else ""
    caption = escape(photo.caption or "") + (" <em>(edited)</em>" if photo.caption_edited else "")
    origin = "" if photo.origin.value == "photo" else f'<br><span class="muted">{escape(photo.origin.value)}</span>'
    return (
        f'<tr id="{escape(photo.id)}"><td>{_thumb(photo, folder)}</td>'
        f"<td>{escape(photo.source)}{origin}</td>"
        f'<td class="{photo.verdict.value}">{photo.verdict.value}</td>'
        f"<td><ul>{reasons}</ul></td><td>{escape(size)}</td><td>{escape(bucket)}</td><td>{caption}</td></tr>"
    )


def _kept_or_dropped(photo: DatasetPhoto) -> str:
    return "kept" if photo.verdict is PhotoVerdict.KEPT else "dropped"


def _failure_row(case: FailureCase) -> str:
    adapter = " ".join(part for part in (case.adapter, case.adapter_version) if part)
    cells = (
        case.sku,
        case.job_kind,
        case.note or "",
        case.prompt or "",
        "" if case.seed is None else str(case.seed),
        adapter,
        case.model_version or "",
        case.generated,
    )
    return "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in cells) + "</tr>"


def render_report(manifest: DatasetManifest, folder: Path, refusal: str | None = None) -> str:
    """The report page as text; `folder` is where the thumbnails are (only their presence is read)."""
    kept = manifest.kept
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>Dataset check: {escape(manifest.brand)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Dataset check: {escape(manifest.brand)}</h1>",
        f"<p>{len(kept)} of {len(manifest.photos)} photos kept; minimum shorter side {manifest.min_side} px; "
        f"trigger token {escape(manifest.trigger_token or '(none)')}; checked {manifest.created_at:%Y-%m-%d %H:%M} UTC."
        "</p>",
    ]
    if refusal:
        parts.append(f'<p class="warning"><strong>Refused:</strong> {escape(refusal)}</p>')
    parts.extend(f'<p class="warning">{escape(warning)}</p>' for warning in manifest.warnings)

    parts.append("<h2>Bucket plan</h2><table><tr><th>Training size</th><th>Photos</th></tr>")
    parts.extend(f"<tr><td>{escape(key)}</td><td>{count}</td></tr>" for key, count in manifest.buckets.items())
    parts.append("</table>")

    groups: dict[str, list[DatasetPhoto]] = {}
    for photo in manifest.photos:
        if photo.duplicate_group:
            groups.setdefault(photo.duplicate_group, []).append(photo)
    parts.append("<h2>Duplicate groups</h2>")
    if not groups:
        parts.append('<p class="muted">No duplicates.</p>')
    for name, members in groups.items():
        listed = ", ".join(f'<a href="#{escape(p.id)}">{escape(p.source)}</a> ({_kept_or_dropped(p)})' for p in members)
        parts.append(f"<p><strong>{escape(name)}</strong>: {listed}</p>")

    parts.append(
        "<h2>Photos</h2><table><tr><th></th><th>Source</th><th>Verdict</th><th>Reasons</th><th>Size</th>"
        "<th>Bucket</th><th>Caption</th></tr>"
    )
    parts.extend(_photo_row(photo, folder) for photo in manifest.photos)
    parts.append("</table>")

    parts.append("<h2>Failure log (rejected generated images)</h2>")
    groups_by_reason = by_reason(manifest.failure_cases)
    if not groups_by_reason:
        parts.append('<p class="muted">No rejections in the feedback read.</p>')
    for reason, cases in groups_by_reason.items():
        parts.append(
            f'<h3 id="failure-{escape(reason.value)}">{escape(reason.value)} ({len(cases)})</h3><table><tr><th>SKU'
            "</th><th>Job</th><th>Note</th><th>Prompt</th><th>Seed</th><th>Adapter</th><th>Model</th>"
            "<th>Generated</th></tr>"
        )
        parts.extend(_failure_row(case) for case in cases)
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(manifest: DatasetManifest, folder: Path, refusal: str | None = None) -> Path:
    path = folder / REPORT_FILE
    path.write_text(render_report(manifest, folder, refusal), encoding="utf-8")
    return path
