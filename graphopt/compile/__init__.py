"""`graphopt compile`: checkpoint or ONNX → a target's artifacts. `compiler` runs the stages,
`search` the grid, `report` writes report.md/json and plots, `ncnn` converts to NCNN."""
