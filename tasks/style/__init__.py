"""Stage: style transfer (random-feature Gram style transfer plus Lab colour transfer)."""
