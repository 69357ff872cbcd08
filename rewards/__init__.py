"""Task rewards for OneThinker's EMA-GRPO (SPEC §5): strings in, `RewardResult` out.

Pure: imports nothing from the rest of this repository. Importing the package registers the
built-in tasks; add a task with `@register_reward("problem_type", data_type=...)`.
"""

from . import grounding, qa, segmentation  # noqa: F401  (registers the built-in tasks)
from .data_errors import (
    RewardDataError,
    data_error_counts,
    guarded_error_counts,
    reset_counters,
)
from .format import format_reward
from .grounding import box_iou, temporal_iou
from .parsing import extract_answer, load_json, normalize_response, strip_ground_truth
from .qa import TIME_LIMITED_TASKS, get_math_timeout, mean_relative_accuracy, set_math_timeout
from .registry import (
    TaskReward,
    UnknownTaskError,
    check_tasks,
    get_reward,
    register_reward,
    registered_tasks,
    unregister_reward,
)
from .reward_model import (
    OpenAIChatRewardScorer,
    RewardModelScorer,
    normalize_by_group,
    reward_model_failures,
)
from .scoring import REWARD_FIELDS, RewardResult, combine, score, score_batch, shutdown_pools
from .segmentation import point_similarity
from .timeout import call_with_timeout
from .timeout import timeouts as reward_timeouts

__all__ = [
    "RewardResult",
    "REWARD_FIELDS",
    "score",
    "score_batch",
    "combine",
    "shutdown_pools",
    "register_reward",
    "unregister_reward",
    "get_reward",
    "check_tasks",
    "registered_tasks",
    "TaskReward",
    "UnknownTaskError",
    "RewardDataError",
    "data_error_counts",
    "guarded_error_counts",
    "reset_counters",
    "RewardModelScorer",
    "OpenAIChatRewardScorer",
    "normalize_by_group",
    "reward_model_failures",
    "set_math_timeout",
    "get_math_timeout",
    "call_with_timeout",
    "reward_timeouts",
    "TIME_LIMITED_TASKS",
    "format_reward",
    "normalize_response",
    "extract_answer",
    "strip_ground_truth",
    "load_json",
    "temporal_iou",
    "box_iou",
    "point_similarity",
    "mean_relative_accuracy",
]
