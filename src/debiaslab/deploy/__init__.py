"""Using a finished run: predictions on new inputs (``predict``), export to ONNX or TorchScript (``export``) and
scores on another dataset or split (``crosseval``)."""
