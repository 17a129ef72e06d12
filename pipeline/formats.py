"""Format versions for the package: `portable.formats` (shared with the device script), failing with a
PipelineError so the CLI prints its one line and exits non-zero."""

from pipeline.errors import PipelineError
from pipeline.portable.formats import FormatError, format_fields, format_version
from pipeline.portable.formats import read_format as _read_format

__all__ = ["format_fields", "format_version", "read_format"]


def read_format(record, kind: str, current: int, **how) -> dict:
    try:
        return _read_format(record, kind, current, **how)
    except FormatError as error:
        raise PipelineError(str(error)) from None
