"""One torchlib registry per opset for the whole process.

Why: `torch.onnx.export(dynamo=True)` rebuilds its table of ATen-to-ONNX translations (torchlib: about a thousand
onnxscript functions) on every call, a share of every export (cProfile puts it inside
`ONNXRegistry.from_torchlib`), and a build, a search or the test suite exports many models. The table depends only on the opset, and an export that passes no custom
translations (the pipeline passes none) only reads it, so the first one built serves every later export.
This touches a private torch module: if it is not where this expects, exports simply take the uncached path.
tests/test_export.py checks that a cached export writes the same graph as an uncached one."""

import contextlib

_BUILT: dict[int, object] = {}  # opset -> ONNXRegistry


@contextlib.contextmanager
def shared_torchlib_registry():
    """Within the block, `ONNXRegistry.from_torchlib(opset)` returns the process's one registry for that opset."""
    try:
        from torch.onnx._internal.exporter import _registration

        build = _registration.ONNXRegistry.__dict__["from_torchlib"].__func__
    except (ImportError, AttributeError, KeyError):
        yield
        return

    def cached(cls, opset_version=None, **kwargs):
        if kwargs or opset_version is None or cls is not _registration.ONNXRegistry:
            # an argument this does not know, or a subclass: build as torch would
            return build(cls, **kwargs) if opset_version is None else build(cls, opset_version, **kwargs)
        if opset_version not in _BUILT:
            _BUILT[opset_version] = build(cls, opset_version)
        return _BUILT[opset_version]

    _registration.ONNXRegistry.from_torchlib = classmethod(cached)
    try:
        yield
    finally:
        _registration.ONNXRegistry.from_torchlib = classmethod(build)
