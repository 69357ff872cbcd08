"""The RL algorithm: rollouts (HF generate, vLLM), advantages, losses, the global RL step."""
