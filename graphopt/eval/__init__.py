"""Judging models: mAP (pycocotools), plots, golden op-count snapshots, and the detection-error
metric the lossy passes share."""
