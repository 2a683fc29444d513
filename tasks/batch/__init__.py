"""Batch bookkeeping around the stages: plan a run from a manifest, then publish its reports."""
