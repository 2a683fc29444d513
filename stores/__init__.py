"""Every IO boundary of the pipeline: the Zarr avatar store, MLflow tracking, expectation suites,
manifests and output files."""
