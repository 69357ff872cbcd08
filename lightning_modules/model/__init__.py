"""The backbone wrapper, its processors and presets, and the fused log-prob kernel."""
