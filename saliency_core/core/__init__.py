"""The engine's base: the forward + input-gradient core, model output checks, baselines, limits, shared helpers."""
