"""The on-device acceptance report (issue 23, docs/ON_DEVICE.md): `pipeline accept` against the loopback SSH
"device" (onnxruntime only, no TensorRT) writes one JSON whose check names why its figures are not the target's,
and `pipeline verify REPORT.json` repeats that check anywhere."""

import json

from conftest import invoke_cli


def test_accept_on_a_device_without_tensorrt_reports_why_and_verify_agrees(loopback_device, tmp_path):
    target = tmp_path / "loopback.toml"
    # the AGX Orin profile: it deploys fp16 and int8 only, and the acceptance engine is fp32 whatever the target
    target.write_text(loopback_device.target_toml(base="jetson-agx-orin", bench={"warmup": 2, "runs": 10}))
    out = tmp_path / "accept"
    accepted = invoke_cli("accept", "--target", str(target), "--out", str(out), "--quiet")
    assert accepted.returncode == 1, accepted.stderr  # the figures are onnxruntime's: not accepted
    report_path = out / "on_device_report.json"
    report = json.loads(report_path.read_text())
    assert report["host"] == loopback_device.host and report["bench"]["latency_source"] == "remote"
    assert report["bench"]["latency"]["runtime_used"] == "onnxruntime" and report["engine"]["built"] is False
    assert "measured with onnxruntime, not TensorRT" in accepted.stdout
    verified = invoke_cli("verify", str(report_path))
    assert verified.returncode != 0 and verified.stderr.startswith(f"error: {report_path}: doctor:")
    # the same report, as a device with TensorRT 10.3 would have written it: the checker accepts it
    good = {
        **report,
        "doctor": {**report["doctor"], "missing": []},
        "bench": {**report["bench"], "latency": {**report["bench"]["latency"], "runtime_used": "tensorrt"}},
        "engine": {"built": True, "stamp": {"tensorrt_version": "10.3.0", "precision": "fp32", "precision_note": None}},
    }
    good_path = tmp_path / "good.json"
    good_path.write_text(json.dumps(good))
    ok = invoke_cli("verify", str(good_path))
    assert ok.returncode == 0 and "accepted" in ok.stdout, ok.stderr
    outside = {**good, "engine": {**good["engine"], "stamp": {**good["engine"]["stamp"], "tensorrt_version": "11.2.0"}}}
    good_path.write_text(json.dumps(outside))
    refused = invoke_cli("verify", str(good_path))
    assert refused.returncode != 0 and "built with TensorRT 11.2.0, outside what" in refused.stderr
