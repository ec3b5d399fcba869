"""Models: the registry and loading, the team's own model files (checked before use), weights on demand."""
