"""What every wing shares: errors, file guard wrappers, model I/O, graph queries and naming, conv
arithmetic, the one comparison rule, MACs, the YOLO head tail, onnxruntime sessions."""
