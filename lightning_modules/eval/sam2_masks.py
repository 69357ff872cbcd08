"""Segmentation answers -> masks through SAM2, for benchmark evaluation (SPEC §5 and §8).

The model answers ``{"boxes": [x1, y1, x2, y2], "positive_points": [[x, y]×3], "negative_points": [[x, y]×3]}``
(plus ``"time": t`` for video) on the 0–1000 scale. `parse_segmentation_prompt` turns that into a pixel
`SegmentationPrompt`, and a `MaskPredictor` (SAM2 through transformers) turns the prompt into masks:

- image: box + 3 positive + 3 negative points for one object, one mask;
- video: the same prompt on the key frame round(t·fps), propagated forward to the end and backward to the
  start, one mask per frame.

`predict_masks` never drops a sample: an unusable answer gives all-False masks and ``ok=False``.
SAM2 is imported lazily, so importing this module stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rewards.parsing import answer_for_accuracy, as_float, as_number_list, load_json, normalize_response

__all__ = [
    "SegmentationPrompt",
    "MaskPredictor",
    "Sam2MaskPredictor",
    "to_pixels",
    "key_frame_index",
    "parse_segmentation_prompt",
    "sam2_prompt_inputs",
    "predict_masks",
    "tiny_sam2",
]

SCALE = 1000.0  # Qwen3-VL normalized coordinates
DATA_TYPES = ("image", "video")


# ---------------------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------------------


def to_pixels(coords: Sequence[Any], width: float, height: float) -> list[float] | list[list[float]]:
    """0–1000 coordinates to pixels: x·W/1000, y·H/1000.

    ``coords`` is a flat ``[x, y]`` / ``[x1, y1, x2, y2]`` (even length, x first), or a list of those.
    """
    if len(coords) > 0 and isinstance(coords[0], (list, tuple, np.ndarray)):
        return [to_pixels(c, width, height) for c in coords]  # type: ignore[misc]
    if len(coords) % 2:
        raise ValueError(f"expected x, y pairs, got {len(coords)} values")
    return [float(v) * (width if i % 2 == 0 else height) / SCALE for i, v in enumerate(coords)]


def key_frame_index(t_seconds: Any, fps: Any, num_frames: int) -> int:
    """Frame of time ``t_seconds``: round(t·fps) (Python's round, half to even) clamped to [0, T-1].

    Never raises. A time or fps that is not a finite number (NaN, ±inf, None, bool, a string), or a
    non-positive fps, carries no usable position, so it gives frame 0, as an empty video does.
    """
    if num_frames <= 0:
        return 0
    vals = []
    for v in (t_seconds, fps):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            return 0
        v = float(v)
        if not math.isfinite(v):
            return 0
        vals.append(v)
    t, f = vals
    if f <= 0:
        return 0
    x = t * f
    if not math.isfinite(x):  # overflow of a huge but finite product: clamp by sign
        return 0 if x < 0 else num_frames - 1
    x = min(max(x, -1.0), float(num_frames))  # keep round() on small numbers
    return int(min(max(round(x), 0), num_frames - 1))


@dataclass
class SegmentationPrompt:
    """A SAM2 prompt in pixels for one object.

    box: ``[x1, y1, x2, y2]`` or None; positive / negative: ``[x, y]`` points (labels 1 / 0);
    time: key-frame second (video) or None.
    """

    box: list[float] | None
    positive: list[list[float]] = field(default_factory=list)
    negative: list[list[float]] = field(default_factory=list)
    time: float | None = None

    @property
    def empty(self) -> bool:
        """True when there is nothing to prompt with."""
        return self.box is None and not self.positive and not self.negative


def _clip_point(x: float, y: float, width: int, height: int) -> list[float]:
    return [min(max(x, 0.0), float(width)), min(max(y, 0.0), float(height))]


def _pixel_points(v: Any, width: int, height: int) -> list[list[float]] | None:
    """Exactly 3 ``[x, y]`` of values `float()` accepts (the reward's rule), finite, in pixels, clipped."""
    if not isinstance(v, list) or len(v) != 3:
        return None
    out = []
    for p in v:
        xy = as_number_list(p, 2)
        if xy is None:
            return None
        x, y = to_pixels(xy, width, height)  # type: ignore[misc]
        if not (math.isfinite(x) and math.isfinite(y)):
            return None
        out.append(_clip_point(x, y, width, height))
    return out


def _pixel_box(v: Any, width: int, height: int) -> list[float] | None:
    """4 finite values with x1 < x2 and y1 < y2, in pixels, clipped; None if empty inside the image."""
    b = as_number_list(v, 4)
    if b is None:
        return None
    x1, y1, x2, y2 = to_pixels(b, width, height)  # type: ignore[misc]
    if not all(math.isfinite(c) for c in (x1, y1, x2, y2)) or not (x1 < x2 and y1 < y2):
        return None
    x1, y1 = _clip_point(x1, y1, width, height)
    x2, y2 = _clip_point(x2, y2, width, height)
    return [x1, y1, x2, y2] if x1 < x2 and y1 < y2 else None


def _json_time(v: Any) -> float | None:
    # A JSON number (not true/false), finite; negative or late times are clamped by key_frame_index.
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    t = as_float(v)
    return t if t is not None and math.isfinite(t) else None


def parse_segmentation_prompt(
    answer: str, width: int, height: int, data_type: str, *, lenient: bool = False
) -> SegmentationPrompt | None:
    """The pixel prompt of a segmentation answer, or None when it is unusable. Never raises on ``answer``.

    ``answer`` is a whole response or the bare answer: it is normalized and the ``<answer>`` text taken as
    for the reward (SPEC §5), then parsed with strict JSON (``lenient=True``: also code fences, trailing
    commas, single quotes). Rules:

    - points: exactly 3 positive and 3 negative finite ``[x, y]`` (as the reward requires), else None;
    - box: 4 finite values with x1 < x2, y1 < y2; a missing or invalid box (or one wholly outside the
      image) leaves a points-only prompt, as an invalid box zeroes only the reward's IoU term;
    - video: ``"time"`` must be a finite JSON number (true/false rejected), else None;
    - coordinates are converted with `to_pixels` and clipped to ``[0, W] × [0, H]``.
    """
    if data_type not in DATA_TYPES:
        raise ValueError(f"data_type must be one of {DATA_TYPES}, got {data_type!r}")
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if not isinstance(answer, str):
        return None
    obj = load_json(answer_for_accuracy(normalize_response(answer)), lenient=lenient)
    if not isinstance(obj, dict):
        return None
    positive = _pixel_points(obj.get("positive_points"), width, height)
    negative = _pixel_points(obj.get("negative_points"), width, height)
    if positive is None or negative is None:
        return None
    time = None
    if data_type == "video":
        time = _json_time(obj.get("time"))
        if time is None:
            return None
    return SegmentationPrompt(_pixel_box(obj.get("boxes"), width, height), positive, negative, time)


def sam2_prompt_inputs(
    prompt: SegmentationPrompt,
) -> tuple[list | None, list | None, list | None]:
    """(input_points, input_labels, input_boxes) for one image and one object, nested as SAM2's processors want.

    Points are the positives (label 1) then the negatives (label 0); the box goes in ``input_boxes``.
    """
    pts = [list(map(float, p)) for p in prompt.positive] + [list(map(float, p)) for p in prompt.negative]
    labels = [1] * len(prompt.positive) + [0] * len(prompt.negative)
    points_in = [[pts]] if pts else None
    labels_in = [[labels]] if pts else None
    boxes_in = [[list(map(float, prompt.box))]] if prompt.box is not None else None
    return points_in, labels_in, boxes_in


# ---------------------------------------------------------------------------------------------------------
# Predictors
# ---------------------------------------------------------------------------------------------------------


@runtime_checkable
class MaskPredictor(Protocol):
    """Turns a pixel prompt into boolean masks at the media's own resolution."""

    def image_mask(self, image: np.ndarray, prompt: SegmentationPrompt) -> np.ndarray:
        """``image`` [H, W, 3] uint8 RGB -> mask [H, W] bool."""
        ...

    def video_masks(self, frames: np.ndarray, key_frame: int, prompt: SegmentationPrompt) -> np.ndarray:
        """``frames`` [T, H, W, 3] uint8 RGB, prompt on ``key_frame`` -> masks [T, H, W] bool."""
        ...


_DTYPES = ("float32", "bfloat16", "float16")
TINY = "tiny"  # a tiny random SAM2 built offline (tests and the CPU demo), never a real checkpoint


def _check_rgb(a: np.ndarray, ndim: int, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != ndim or a.shape[-1] != 3:
        raise ValueError(f"{what} must be {'[T, H, W, 3]' if ndim == 4 else '[H, W, 3]'} RGB, got {a.shape}")
    if a.dtype != np.uint8:
        raise TypeError(f"{what} must be uint8, got {a.dtype}")
    return a


class Sam2MaskPredictor:
    """`MaskPredictor` with transformers' SAM2 (``Sam2Model`` for images, ``Sam2VideoModel`` for videos).

    Models load with ``from_pretrained`` on first use (the video one only when a video comes). The released
    OneThinker models are evaluated with ``facebook/sam2.1-hiera-large`` (SPEC §8).

    Mask choice: ``multimask_output=False``. With 3 + 3 points and a box the prompt is not ambiguous; SAM2's
    own rule (``multimask_output`` only for a single click, ``_use_multimask`` in the video model) and its
    image predictor's advice say the same. The decoder then returns its single-mask token, falling back to the
    best of the 3 multimask outputs by predicted IoU when that mask is unstable (SAM2's dynamic fallback,
    active in eval mode). Masks are the logits upsampled to the media size and thresholded at 0.

    Args:
        model_name_or_path: SAM2 checkpoint (hub id or folder); ``tiny`` builds a tiny random SAM2 offline.
        device: ``auto`` (the current CUDA device, else the CPU), or a torch device string.
        dtype: ``float32``, ``bfloat16`` or ``float16``.
        video_model_name_or_path: checkpoint of the video model (default: ``model_name_or_path``).
    """

    def __init__(
        self,
        model_name_or_path: str = "facebook/sam2.1-hiera-large",
        device: str = "auto",
        dtype: str = "float32",
        video_model_name_or_path: str | None = None,
    ) -> None:
        import torch

        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
        if device == "auto":  # the current CUDA device (each DDP rank's own), else the CPU
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype)
        self.model_name_or_path = model_name_or_path
        self.video_model_name_or_path = video_model_name_or_path or model_name_or_path
        self._image_model: Any = None
        self._image_processor: Any = None
        self._video_model: Any = None
        self._video_processor: Any = None
        self._can_load = True

    @classmethod
    def from_models(
        cls,
        image_model: Any,
        image_processor: Any,
        video_model: Any = None,
        video_processor: Any = None,
    ) -> Sam2MaskPredictor:
        """Wrap models already built (tests, custom checkpoints). Device and dtype follow ``image_model``.

        The models are put in eval mode (SAM2's dynamic mask fallback and dropout depend on it).
        """
        param = next(image_model.parameters())
        self = cls.__new__(cls)
        self.device, self.dtype = param.device, param.dtype
        self.model_name_or_path = self.video_model_name_or_path = ""
        self._image_model, self._image_processor = image_model.eval(), image_processor
        self._video_model = video_model.eval() if video_model is not None else None
        self._video_processor = video_processor
        self._can_load = False
        return self

    # Lazy loading ---------------------------------------------------------------------------------------

    def _load(self, video: bool) -> None:
        """Load the image or the video model and its processor, once."""
        if (self._video_model if video else self._image_model) is not None:
            return
        kind = "video" if video else "image"
        if not self._can_load:
            raise RuntimeError(f"no {kind} model was given to from_models")
        name = self.video_model_name_or_path if video else self.model_name_or_path
        if name == TINY:
            models = tiny_sam2()
            self._image_model, self._video_model = (m.to(self.device, self.dtype).eval() for m in models[::2])
            self._image_processor, self._video_processor = models[1], models[3]
            return
        import transformers

        prefix = "Sam2Video" if video else "Sam2"
        model = (
            getattr(transformers, f"{prefix}Model")
            .from_pretrained(name, dtype=self.dtype)
            .to(self.device)
            .eval()
        )
        processor = getattr(transformers, f"{prefix}Processor").from_pretrained(name)
        if video:
            self._video_model, self._video_processor = model, processor
        else:
            self._image_model, self._image_processor = model, processor

    def _load_image(self) -> None:
        self._load(video=False)

    def _load_video(self) -> None:
        self._load(video=True)

    @property
    def image_model(self) -> Any:
        """The ``Sam2Model`` (loaded on first access)."""
        self._load_image()
        return self._image_model

    @property
    def image_processor(self) -> Any:
        """The ``Sam2Processor`` (loaded on first access)."""
        self._load_image()
        return self._image_processor

    @property
    def video_model(self) -> Any:
        """The ``Sam2VideoModel`` (loaded on first access)."""
        self._load_video()
        return self._video_model

    @property
    def video_processor(self) -> Any:
        """The ``Sam2VideoProcessor`` (loaded on first access)."""
        self._load_video()
        return self._video_processor

    # Prediction -----------------------------------------------------------------------------------------

    def image_mask(self, image: np.ndarray, prompt: SegmentationPrompt) -> np.ndarray:
        """One mask [H, W] bool for the prompt's object (all False for an empty prompt)."""
        import torch

        image = _check_rgb(image, 3, "image")
        height, width = image.shape[:2]
        if prompt.empty:
            return np.zeros((height, width), dtype=bool)
        model, processor = self.image_model, self.image_processor
        points, labels, boxes = sam2_prompt_inputs(prompt)
        # Channels-first tensor: the processor cannot mistake a 3-pixel-high image for channels-first.
        pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        inputs = processor(
            images=pixels, input_points=points, input_labels=labels, input_boxes=boxes, return_tensors="pt"
        )
        original_sizes = inputs.pop("original_sizes")
        feed = {
            k: (v.to(self.device, self.dtype) if k == "pixel_values" else v.to(self.device))
            for k, v in inputs.items()
        }
        with torch.inference_mode():
            out = model(**feed, multimask_output=False)
        masks = processor.post_process_masks(out.pred_masks.float().cpu(), original_sizes)
        return masks[0][0, 0].numpy().astype(bool)  # [1 object, 1 mask, H, W]

    def video_masks(self, frames: np.ndarray, key_frame: int, prompt: SegmentationPrompt) -> np.ndarray:
        """Masks [T, H, W] bool: prompt on ``key_frame``, then forward to T-1 and backward to 0.

        transformers' ``propagate_in_video_iterator`` starts both passes at the key frame (its conditioning
        output is reused, not recomputed, on the second visit); each frame's mask is kept from its first
        visit, so every frame gets exactly one mask. As in SAM2's reference, the backward pass runs after the
        forward one and may attend to the forward-tracked frames near the key frame.
        """
        import torch

        frames = _check_rgb(frames, 4, "frames")
        num_frames, height, width = frames.shape[:3]
        masks = np.zeros((num_frames, height, width), dtype=bool)
        if num_frames == 0 or prompt.empty:
            return masks
        if not 0 <= key_frame < num_frames:
            raise ValueError(f"key_frame {key_frame} outside [0, {num_frames})")
        model, processor = self.video_model, self.video_processor
        video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # [T, 3, H, W]
        session = processor.init_video_session(
            video=video,
            inference_device=self.device,
            video_storage_device="cpu",  # all frames at 1024² would not fit a GPU for long clips
            dtype=self.dtype,
        )
        points, labels, boxes = sam2_prompt_inputs(prompt)
        processor.add_inputs_to_inference_session(
            inference_session=session,
            frame_idx=int(key_frame),
            obj_ids=1,
            input_points=points,
            input_labels=labels,
            input_boxes=boxes,
        )
        done = np.zeros(num_frames, dtype=bool)
        for reverse in (False, True):
            for out in model.propagate_in_video_iterator(
                session, start_frame_idx=int(key_frame), reverse=reverse
            ):
                idx = int(out.frame_idx)
                if done[idx]:
                    continue
                m = processor.post_process_masks(
                    [out.pred_masks.float().cpu()], original_sizes=[[height, width]]
                )
                masks[idx] = m[0][0, 0].numpy().astype(bool)  # [1 object, 1 mask, H, W]
                done[idx] = True
        if not done.all():
            raise RuntimeError(f"propagation missed frames {np.flatnonzero(~done).tolist()}")
        return masks


def predict_masks(
    predictor: MaskPredictor,
    media: np.ndarray,
    prompt: SegmentationPrompt | None,
    data_type: str,
    fps: float | None = None,
) -> tuple[np.ndarray, bool]:
    """(mask [H, W] or masks [T, H, W], ok). ``media``: the image [H, W, 3] or the frames [T, H, W, 3].

    An unusable prompt (None, nothing to prompt with, or a video prompt without a time) gives all-False
    masks of the media's size and ``ok=False``: the sample is scored, never dropped. For video the key frame
    is `key_frame_index` (prompt.time, fps, T).
    """
    if data_type not in DATA_TYPES:
        raise ValueError(f"data_type must be one of {DATA_TYPES}, got {data_type!r}")
    media = np.asarray(media)
    expected_ndim = 3 if data_type == "image" else 4
    if media.ndim != expected_ndim:
        raise ValueError(f"{data_type} media must have {expected_ndim} dims, got shape {media.shape}")
    shape = media.shape[:-1]
    unusable = prompt is None or prompt.empty or (data_type == "video" and prompt.time is None)
    if unusable or (data_type == "video" and shape[0] == 0):
        return np.zeros(shape, dtype=bool), False
    if data_type == "image":
        out = predictor.image_mask(media, prompt)
    else:
        key = key_frame_index(prompt.time, fps, shape[0])
        out = predictor.video_masks(media, key, prompt)
    out = np.asarray(out).astype(bool, copy=False)
    if out.shape != shape:
        raise ValueError(f"predictor returned masks of shape {out.shape}, expected {shape}")
    return out, True


# ---------------------------------------------------------------------------------------------------------
# Tiny random SAM2 for tests
# ---------------------------------------------------------------------------------------------------------

_TINY_SIZE = 64  # input side; features at 16, 8, 4 (strides 4, 8, 16)
_TINY_HIDDEN = 128  # the video model needs a multiple of its 64-channel memory, above 64


def tiny_sam2(seed: int = 0) -> tuple[Any, Any, Any, Any]:
    """A tiny randomly initialised ``(Sam2Model, Sam2Processor, Sam2VideoModel, Sam2VideoProcessor)``, offline.

    64×64 input, a 4-stage Hiera with 8–64 channels and 5 blocks, 128-wide FPN/decoder, one memory attention
    layer and 3 memories. Models are in eval mode; the global RNG is left untouched.
    """
    import torch
    from transformers import (
        Sam2Config,
        Sam2ImageProcessor,
        Sam2Model,
        Sam2Processor,
        Sam2VideoConfig,
        Sam2VideoModel,
        Sam2VideoProcessor,
        Sam2VideoVideoProcessor,
    )

    s, h = _TINY_SIZE, _TINY_HIDDEN
    backbone = {
        "model_type": "sam2_hiera_det_model",
        "hidden_size": 8,
        "image_size": [s, s],
        "blocks_per_stage": [1, 1, 2, 1],
        "embed_dim_per_stage": [8, 16, 32, 64],
        "num_attention_heads_per_stage": [1, 1, 1, 1],
        "window_size_per_stage": [4, 4, 4, 2],
        "global_attention_blocks": [3],  # not a stage's first (pooling) block
        "window_positional_embedding_background_size": [4, 4],
    }
    vision = {
        "model_type": "sam2_vision_model",
        "backbone_config": backbone,
        "backbone_channel_list": [64, 32, 16, 8],
        "backbone_feature_sizes": [[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]],
        "fpn_hidden_size": h,
    }
    prompt_encoder = {"hidden_size": h, "image_size": s, "patch_size": 16}
    mask_decoder = {
        "hidden_size": h,
        "mlp_dim": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "iou_head_hidden_dim": 32,
    }
    image_config = Sam2Config(
        vision_config=vision, prompt_encoder_config=prompt_encoder, mask_decoder_config=mask_decoder
    )
    video_config = Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config=prompt_encoder,
        mask_decoder_config=mask_decoder,
        image_size=s,
        num_maskmem=3,
        max_object_pointers_in_encoder=4,
        memory_attention_hidden_size=h,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=64,
        memory_attention_rope_feat_sizes=[s // 16, s // 16],
        memory_encoder_hidden_size=h,
        memory_encoder_output_channels=64,  # fixed by the memory attention's key/value width
        mask_downsampler_embed_dim=h,
        memory_fuser_num_layers=1,
        memory_fuser_embed_dim=h,
        memory_fuser_intermediate_dim=64,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        image_model = Sam2Model(image_config).eval()
        video_model = Sam2VideoModel(video_config).eval()
    size = {"height": s, "width": s}
    image_processor = Sam2ImageProcessor(size=size, mask_size={"height": s // 4, "width": s // 4})
    processor = Sam2Processor(image_processor=image_processor)
    video_processor = Sam2VideoProcessor(
        image_processor=image_processor, video_processor=Sam2VideoVideoProcessor(size=size)
    )
    return image_model, processor, video_model, video_processor
