"""`onethinker data check`: validate a manifest and its media without loading a model."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from datamodules.media import MediaError, PixelBudget, load_image, load_video
from datamodules.records import Record, RecordError, RecordKind, detect_kind, iter_records

# Small decode budget: the check only proves a file decodes.
_PROBE = PixelBudget(1024, 32 * 32 * 4)


@dataclass
class CheckReport:
    path: str
    kind: str
    counts: dict[str, Counter] = field(
        default_factory=lambda: {k: Counter() for k in ("problem_type", "data_type", "data_source")}
    )
    invalid: list[str] = field(default_factory=list)
    bad_media: list[str] = field(default_factory=list)
    records: int = 0

    @property
    def ok(self) -> bool:
        return self.records > 0 and not self.invalid and not self.bad_media

    def render(self) -> str:
        lines = [
            f"{self.path} ({self.kind}): {self.records} valid records, {len(self.invalid)} invalid, {len(self.bad_media)} bad media"
        ]
        if not self.records and not self.invalid:
            lines.append("  the manifest holds no records")
        for name, counter in self.counts.items():
            if not counter:
                continue
            lines.append(f"  by {name}:")
            lines += [f"    {value or '<empty>'}: {n}" for value, n in sorted(counter.items())]
        if self.invalid:
            lines.append("  invalid records:")
            lines += [f"    {e}" for e in self.invalid]
        if self.bad_media:
            lines.append("  missing or undecodable media:")
            lines += [f"    {e}" for e in self.bad_media]
        return "\n".join(lines)


def _probe_media(record: Record, decode: bool) -> list[str]:
    label = f"{record.source} #{record.index} problem_id={record.problem_id}"
    errors = []
    for path in record.media:
        if not decode:
            if not path.is_file():
                errors.append(str(MediaError(path, "file not found", label)))
            continue
        try:
            if record.data_type == "image":
                load_image(path, _PROBE, record=label)
            else:
                load_video(path, _PROBE, fps=0.5, max_frames=4, record=label)
        except MediaError as e:
            errors.append(str(e))
    return errors


def check_manifest(
    path: str | Path,
    kind: RecordKind | None = None,
    media_root: str | Path | None = None,
    decode: bool = True,
) -> CheckReport:
    """Count records by type and source, and list every invalid record and bad media file."""
    kind = kind or detect_kind(path)
    report = CheckReport(str(path), kind)
    for item in iter_records(path, kind, media_root):
        if isinstance(item, RecordError):
            report.invalid.append(str(item))
            continue
        report.records += 1
        for name in report.counts:
            report.counts[name][getattr(item, name)] += 1
        report.bad_media += _probe_media(item, decode)
    return report
