"""Shared by the three modules: sharding (FSDP2), atomic checkpoints, schedules, step logging."""
