"""Stage: reconstruct."""
