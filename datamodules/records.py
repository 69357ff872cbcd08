"""Typed, validated OneThinker records (SPEC §2): RL, SFT and evaluation manifests.

A manifest is a JSON list or JSONL. Every problem is reported with the file, the record index (and
line for JSONL), the ``problem_id`` and the field, so a broken manifest is fixed in one look.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from datamodules.tasks import DATA_TYPES, PROBLEM_TYPES

RecordKind = Literal["rl", "sft", "eval"]
RECORD_KINDS: tuple[str, ...] = ("rl", "sft", "eval")
PLACEHOLDERS: dict[str, str] = {"image": "<image>", "video": "<video>"}


class RecordError(ValueError):
    """A manifest record that does not validate."""

    def __init__(self, path: str | Path, where: str, problem_id: Any, field_name: str, message: str):
        self.path, self.where, self.problem_id, self.field = str(path), where, problem_id, field_name
        super().__init__(f"{path}: {where} (problem_id={problem_id}): field '{field_name}': {message}")


class ManifestError(ValueError):
    """A manifest file that cannot be read as records at all (missing, empty, not JSON)."""

    def __init__(self, path: str | Path, message: str):
        self.path = str(path)
        super().__init__(f"{path}: {message}")


@dataclass(frozen=True)
class ChatTurn:
    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True)
class RecordBase:
    """Fields every record kind has once validated."""

    source: str
    index: int
    problem_id: int
    problem_type: str
    data_type: str
    data_source: str
    media: tuple[Path, ...]


@dataclass(frozen=True)
class RLRecord(RecordBase):
    problem: str = ""
    options: tuple[str, ...] = ()
    answer: str = ""
    problem_reserved_text: str = ""

    @property
    def target(self) -> str:
        return self.answer


@dataclass(frozen=True)
class EvalRecord(RecordBase):
    problem: str = ""
    options: tuple[str, ...] = ()
    solution: str = ""
    resolution: tuple[int, int] | None = None
    fps: float | None = None
    segmentation_output: Any = None
    frame_boxes: tuple[tuple[float, float, float, float], ...] | None = None  # per-frame GT, xywh pixels
    frame_absent: tuple[int, ...] | None = None  # 1 where the target is absent (GOT-10k absence.label)

    @property
    def target(self) -> str:
        return self.solution


@dataclass(frozen=True)
class SFTRecord(RecordBase):
    messages: tuple[ChatTurn, ...] = field(default_factory=tuple)

    @property
    def target(self) -> str:
        return self.messages[-1].content

    @property
    def problem(self) -> str:
        return self.messages[0].content

    @property
    def options(self) -> tuple[str, ...]:
        return ()


Record = RLRecord | SFTRecord | EvalRecord


class _Checker:
    """Reads typed fields from one raw record and raises `RecordError` with full context."""

    def __init__(self, raw: Any, path: Path, where: str):
        self.raw, self.path, self.where = raw, path, where
        self.problem_id = raw.get("problem_id") if isinstance(raw, dict) else None

    def fail(self, field_name: str, message: str) -> RecordError:
        return RecordError(self.path, self.where, self.problem_id, field_name, message)

    def get(self, name: str, types: type | tuple[type, ...], default: Any = ...) -> Any:
        if name not in self.raw:
            if default is ...:
                raise self.fail(name, "missing")
            return default
        value = self.raw[name]
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            raise self.fail(name, f"expected {_type_names(types)}, got bool")
        if not isinstance(value, types):
            raise self.fail(name, f"expected {_type_names(types)}, got {type(value).__name__}")
        return value

    def choice(self, name: str, valid: tuple[str, ...]) -> str:
        value = self.get(name, str)
        if value not in valid:
            raise self.fail(name, f"unknown value {value!r}; valid values: {', '.join(valid)}")
        return value

    def str_list(self, name: str, default: Any = ...) -> tuple[str, ...]:
        values = self.get(name, list, default)
        for i, item in enumerate(values):
            if not isinstance(item, str):
                raise self.fail(f"{name}[{i}]", f"expected str, got {type(item).__name__}")
        return tuple(values)


def _type_names(types: type | tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))


def _resolve(paths: tuple[str, ...], media_root: Path) -> tuple[Path, ...]:
    return tuple(p if p.is_absolute() else media_root / p for p in map(Path, paths))


def _media_list(c: _Checker, data_type: str, media_root: Path) -> tuple[Path, ...]:
    """`images` or `videos`, which must agree with `data_type`; absent means text only."""
    other = "videos" if data_type == "image" else "images"
    if c.raw.get(other):
        raise c.fail(other, f"data_type is {data_type!r} but the record lists {other}")
    return _resolve(c.str_list(f"{data_type}s", ()), media_root)


def _check_placeholders(c: _Checker, text: str, field_name: str, data_type: str, n_media: int) -> None:
    n_tags = text.count(PLACEHOLDERS[data_type])
    if n_tags and n_tags != n_media:
        raise c.fail(
            field_name, f"{n_tags} {PLACEHOLDERS[data_type]} placeholder(s) but {n_media} media item(s)"
        )
    if not n_media and n_tags:
        raise c.fail(field_name, f"has {PLACEHOLDERS[data_type]} but the record lists no media")


def _rl(c: _Checker, base: dict[str, Any], media_root: Path) -> RLRecord:
    base["media"] = _media_list(c, base["data_type"], media_root)
    problem = c.get("problem", str)
    _check_placeholders(c, problem, "problem", base["data_type"], len(base["media"]))
    return RLRecord(
        **base,
        problem=problem,
        options=c.str_list("options", ()),
        answer=c.get("answer", str),
        problem_reserved_text=c.get("problem_reserved_text", str, ""),
    )


def _eval(c: _Checker, base: dict[str, Any], media_root: Path) -> EvalRecord:
    path = c.get("path", (str, list))
    paths = (path,) if isinstance(path, str) else tuple(path)
    if not all(isinstance(p, str) for p in paths):
        raise c.fail("path", "expected str or list of str")
    problem = c.get("problem", str)
    resolution = c.get("resolution", dict, None)
    if resolution is not None:
        w, h = resolution.get("width"), resolution.get("height")
        if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
            raise c.fail("resolution", f"expected {{width: int > 0, height: int > 0}}, got {resolution!r}")
        resolution = (w, h)
    fps = c.get("fps", (int, float), None)
    segmentation = c.get("segmentation_output", (dict, list), None)
    if base["problem_type"] == "segmentation":
        if segmentation is None:
            raise c.fail("segmentation_output", "missing (required for segmentation)")
        if resolution is None:
            raise c.fail("resolution", "missing (required for segmentation)")
        if base["data_type"] == "video" and fps is None:
            raise c.fail("fps", "missing (required for video segmentation)")
    return EvalRecord(
        **{**base, "media": _resolve(paths, media_root)},
        problem=problem,
        options=c.str_list("options", ()),
        solution=c.get("solution", str),
        resolution=resolution,
        fps=float(fps) if fps is not None else None,
        segmentation_output=segmentation,
        **_frame_truth(c),
    )


def _frame_truth(c: _Checker) -> dict[str, Any]:
    """Optional per-frame tracking ground truth (GOT-10k protocol): ``frame_boxes`` and ``frame_absent``."""
    boxes = c.get("frame_boxes", list, None)
    absent = c.get("frame_absent", list, None)
    if boxes is None:
        if absent is not None:
            raise c.fail("frame_absent", "given without frame_boxes")
        return {}
    numbers = (int, float)
    if not boxes or not all(
        isinstance(b, list)
        and len(b) == 4
        and all(isinstance(v, numbers) and not isinstance(v, bool) for v in b)
        for b in boxes
    ):
        raise c.fail("frame_boxes", "expected a non-empty list of [x, y, w, h] pixel boxes, one per frame")
    if absent is not None and (len(absent) != len(boxes) or not all(v in (0, 1) for v in absent)):
        raise c.fail("frame_absent", f"expected {len(boxes)} values of 0 or 1, one per frame")
    return {
        "frame_boxes": tuple(tuple(float(v) for v in b) for b in boxes),
        "frame_absent": None if absent is None else tuple(int(v) for v in absent),
    }


def _sft(c: _Checker, base: dict[str, Any], media_root: Path) -> SFTRecord:
    raw_messages = c.get("messages", list)
    turns = []
    for i, m in enumerate(raw_messages):
        if not isinstance(m, dict):
            raise c.fail(f"messages[{i}]", f"expected object, got {type(m).__name__}")
        role, content = m.get("role"), m.get("content")
        if role not in ("user", "assistant"):
            raise c.fail(f"messages[{i}].role", f"unknown value {role!r}; valid values: user, assistant")
        if not isinstance(content, str):
            raise c.fail(f"messages[{i}].content", f"expected str, got {type(content).__name__}")
        turns.append(ChatTurn(role, content))
    if len(turns) < 2 or turns[0].role != "user" or turns[-1].role != "assistant":
        raise c.fail("messages", "expected a user turn first and an assistant turn last")
    base["media"] = _media_list(c, base["data_type"], media_root)
    _check_placeholders(c, turns[0].content, "messages[0].content", base["data_type"], len(base["media"]))
    return SFTRecord(**base, messages=tuple(turns))


def _infer_sft_types(c: _Checker) -> tuple[str, str]:
    """SFT (ShareGPT) records may omit the types: infer them from the media key and the prompt."""
    from datamodules.prompts import infer_problem_type

    data_type = "video" if c.raw.get("videos") else "image"
    if "data_type" in c.raw:
        data_type = c.choice("data_type", DATA_TYPES)
    if "problem_type" in c.raw:
        return c.choice("problem_type", PROBLEM_TYPES), data_type
    messages = c.raw.get("messages")
    first = (
        messages[0].get("content")
        if isinstance(messages, list) and messages and isinstance(messages[0], dict)
        else None
    )
    inferred = infer_problem_type(first) if isinstance(first, str) else None
    if inferred is None:
        raise c.fail("problem_type", "missing, and the user turn ends with no known type template")
    return inferred, data_type


_BUILDERS = {"rl": _rl, "sft": _sft, "eval": _eval}


def validate_record(
    raw: Any, kind: RecordKind, *, path: str | Path, where: str, index: int, media_root: Path
) -> Record:
    """Validate one raw JSON object into a typed record, or raise `RecordError`."""
    c = _Checker(raw, Path(path), where)
    if not isinstance(raw, dict):
        raise c.fail("<record>", f"expected a JSON object, got {type(raw).__name__}")
    if kind == "sft":
        problem_type, data_type = _infer_sft_types(c)
        problem_id = c.get("problem_id", int, index)
    else:
        problem_id = c.get("problem_id", int)
        data_type = c.choice("data_type", DATA_TYPES)
        problem_type = c.choice("problem_type", PROBLEM_TYPES)
    base = {
        "source": str(path),
        "index": index,
        "problem_id": problem_id,
        "problem_type": problem_type,
        "data_type": data_type,
        "data_source": c.get("data_source", str, ""),
    }
    return _BUILDERS[kind](c, base, media_root)


def _raw_items(path: Path) -> Iterator[tuple[str, Any, Exception | None]]:
    """(where, raw object, parse error) for each record of a JSON list or JSONL file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(path, "manifest file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestError(path, f"cannot be read as a UTF-8 text manifest ({err})") from None
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise RecordError(
                path, f"line {e.lineno}", None, "<json>", f"malformed JSON list: {e.msg}"
            ) from e
        if not isinstance(items, list):
            raise ManifestError(path, "expected a JSON list of records or JSON lines")
        for i, item in enumerate(items):
            yield f"record {i}", item, None
        return
    index = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"record {index} (line {lineno})"
        index += 1
        try:
            yield where, json.loads(line), None
        except json.JSONDecodeError as e:
            yield where, None, e


def iter_records(
    path: str | Path, kind: RecordKind, media_root: str | Path | None = None
) -> Iterator[Record | RecordError]:
    """Yield each record of a manifest, validated, or the `RecordError` it raised."""
    if kind not in RECORD_KINDS:
        raise ValueError(f"unknown record kind {kind!r}; valid: {', '.join(RECORD_KINDS)}")
    path = Path(path)
    root = Path(media_root) if media_root is not None else path.parent
    for index, (where, raw, parse_error) in enumerate(_raw_items(path)):
        if parse_error is not None:
            yield RecordError(path, where, None, "<json>", f"malformed JSON line: {parse_error}")
            continue
        try:
            yield validate_record(raw, kind, path=path, where=where, index=index, media_root=root)
        except RecordError as e:
            yield e


def load_records(path: str | Path, kind: RecordKind, media_root: str | Path | None = None) -> list[Record]:
    """Load and validate a manifest; the first invalid record raises `RecordError`.

    Relative media paths resolve against ``media_root`` (default: the manifest's folder).
    """
    records: list[Record] = []
    for item in iter_records(path, kind, media_root):
        if isinstance(item, RecordError):
            raise item
        records.append(item)
    if not records:
        raise ManifestError(path, "the manifest holds no records")
    return records


def record_key(record: Record) -> tuple[str, int]:
    """An evaluation record's identity across manifests: (manifest file stem, problem_id)."""
    return Path(record.source).stem, record.problem_id


def detect_kind(path: str | Path) -> RecordKind:
    """Guess the record kind from the first record's keys (`ManifestError` / `RecordError` when the
    file is missing, empty, not JSON, or its first record is not an object)."""
    path = Path(path)
    item = next(_raw_items(path), None)
    if item is None:
        raise ManifestError(path, "the manifest holds no records")
    where, first, parse_error = item
    if parse_error is not None:
        raise ManifestError(path, f"{where} is not valid JSON ({parse_error})")
    if not isinstance(first, dict):
        raise ManifestError(path, f"{where} is a {type(first).__name__}, expected a JSON object")
    if "messages" in first:
        return "sft"
    if "solution" in first or "path" in first:
        return "eval"
    return "rl"
