"""Data the passes and the evaluator read: datasets (data.yaml, list files, labels) and the
verification/calibration feeds."""
