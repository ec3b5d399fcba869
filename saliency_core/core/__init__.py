"""The engine's base: the one forward + VJP core (gradients), the one argument check (arguments), model output
checks, baselines, limits, shared helpers."""
