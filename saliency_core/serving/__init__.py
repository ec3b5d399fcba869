"""What a shared server needs: sign-in decisions, the compute queue and budget, bounded caches, memory."""
