"""int8 quantization's machinery: onnxruntime's quantizer (streaming calibration, QDQ insertion,
dynamic) and what int8 costs (sensitivity, the budget loop). The `quantize` pass drives it."""
