"""Code that also runs on a device without the package: the device benchmark and the session loaders the
package's runners share with it, so a number measured over SSH and one measured here come from the same code.

Rules, checked by tests/test_layers.py: standard library and numpy only (onnxruntime, tensorrt, pycuda and
cuda-python are imported inside functions, when used); relative imports only, never `pipeline.`; Python 3.8
syntax, for JetPack 5. The SSH harness copies this folder as it is and runs `python3 -m portable.device_bench`.
"""
