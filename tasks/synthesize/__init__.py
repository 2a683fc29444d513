"""Synthetic face data sets: sampled scenes of reconstructed identities, rendered with labels."""
