"""Aligned face dataset: find images and videos, align faces to a canonical template, unwrap to canonical UV."""
