"""Export to ONNX and check the file against its PyTorch source."""

from pipeline.export.onnx_export import ExportResult, export_onnx
from pipeline.export.parity import ParityReport, check_parity, raise_on_failure

__all__ = ["ExportResult", "export_onnx", "ParityReport", "check_parity", "raise_on_failure"]
