"""`pipeline gate`: the decision rule on known samples, then the real command on real models (a true A/A and a
real, large injected slowdown, with thresholds far from the noise so the tests cannot flake)."""

import json
import xml.etree.ElementTree as ET

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import invoke_cli

from pipeline.errors import PipelineError
from pipeline.export import export_onnx
from pipeline.gate.gate import parse_regression
from pipeline.gate.inject import slowed
from pipeline.gate.stats import PASS, REGRESSION, UNMEASURABLE, decide
from pipeline.measure import bootstrap_ci, trimmed_mean
from pipeline.models import create_model
from pipeline.preprocess import default_preprocess

# LeNet takes ~0.05 ms: 300 runs make a round long enough (~15 ms) that its median is stable even on a busy CI
# machine; fewer runs let a single hiccup swing the per-round ratios past the "too busy to tell" limit.
FAST = ["--rounds", "10", "--max-rounds", "20", "--runs", "300", "--quiet"]


def test_the_decision_rule():
    rng = np.random.default_rng(0)
    base = 1.0 + 0.02 * rng.standard_normal(20)
    same = base * (1 + 0.01 * rng.standard_normal(20))
    assert decide(base, same, 0.05).status == PASS
    slower = decide(base, base * 1.10 * (1 + 0.01 * rng.standard_normal(20)), 0.05)
    assert slower.status == REGRESSION and slower.low > 1 and "above the allowed 5.0 %" in slower.reason
    small = decide(base, base * 1.02, 0.05)  # real but within the allowance: passes, and says it is significant
    assert small.status == PASS and "within the allowed" in small.reason
    assert decide(base[:3], same[:3], 0.05).status == UNMEASURABLE
    wild = decide(base, base * np.exp(rng.normal(0, 1.0, 20)), 0.05)  # ratios spread over an order of magnitude
    assert wild.status == UNMEASURABLE and "too busy" in wild.reason


def test_more_rounds_are_made_only_while_the_verdict_is_unclear():
    """The rounds policy's question for the gate: could more rounds still change the verdict?"""
    from pipeline.gate.settings import GateSettings
    from pipeline.gate.stats import gate_question

    gate = GateSettings()

    def verdict_is_clear(baseline, candidate) -> bool:
        return gate_question(gate)({"baseline": baseline, "candidate": candidate})

    rng = np.random.default_rng(1)
    base = 1.0 + 0.02 * rng.standard_normal(20)
    noise, wide = 1 + 0.005 * rng.standard_normal(20), 1 + 0.02 * rng.standard_normal(20)
    assert verdict_is_clear(base, base * noise)  # A/A: the interval lies below 1.05
    assert verdict_is_clear(base, base * 1.20 * noise)  # a regression: settled
    across = decide(base, base * 1.05 * wide, gate.max_regression)  # 4.7 % slower, interval 3.8 … 5.5 %
    assert across.status == PASS and across.ratio < 1.05 < across.high
    assert not verdict_is_clear(base, base * 1.05 * wide)  # across the line: measure on
    assert not verdict_is_clear(base, base * np.exp(rng.normal(0, 1.0, 20)))  # too busy: measure on


def test_the_question_the_extra_rounds_wait_on_agrees_with_the_verdict_and_travels_as_json():
    """The device script asks `gate_question` for a remote target: it must answer as the verdict would (settled
    = a regression, or a pass whose interval is wholly below the line), and survive the trip as JSON."""
    from pipeline.gate.settings import GateSettings
    from pipeline.gate.stats import gate_question
    from pipeline.portable.paired import SlowdownQuestion

    gate = GateSettings(max_regression=0.05)
    question = gate_question(gate)
    assert SlowdownQuestion.from_dict(json.loads(json.dumps(question.to_dict()))) == question
    rng = np.random.default_rng(7)
    answers = set()
    for _ in range(300):
        rounds, slowdown, noise = int(rng.integers(3, 40)), rng.uniform(0.9, 1.2), rng.choice([0.003, 0.02, 0.6])
        base = 1.0 + 0.02 * rng.standard_normal(rounds)
        candidate = base * slowdown * np.exp(noise * rng.standard_normal(rounds))
        verdict = decide(base, candidate, gate.max_regression, confidence=gate.confidence)
        settled = verdict.status == REGRESSION or (verdict.status == PASS and verdict.high < 1 + gate.max_regression)
        assert question({"baseline": base, "candidate": candidate}) == settled
        answers.add(settled)
    assert answers == {True, False}  # both answers were exercised


def test_interleaved_rounds_stop_early_only_after_the_minimum():
    from pipeline.portable.timing import interleaved_rounds

    timers = {"a": lambda: [1.0, 1.1], "b": lambda: [2.0, 2.1]}

    def rounds(**policy):
        return len(interleaved_rounds(timers, 10, **policy)["a"]["round_medians_ms"])

    assert rounds() == 10 and rounds(min_rounds=3) == 10  # no question asked, no time share: the maximum
    assert rounds(min_rounds=3, enough=lambda medians: True) == 3
    assert rounds(min_rounds=3, enough=lambda medians: len(medians["b"]) >= 5) == 5
    assert rounds(min_rounds=4, max_seconds=0.0) == 4  # the time share is spent: the minimum is still made


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    values = np.random.default_rng(1).normal(1.0, 0.05, 30)
    first, second = bootstrap_ci(values), bootstrap_ci(values)
    assert first == second and first[1] <= first[0] <= first[2]
    assert trimmed_mean([1, 2, 3, 4, 100]) == 3.0  # one disturbed round does not move it


@pytest.mark.parametrize("text, fraction", [("5%", 0.05), ("12.5 %", 0.125), ("0.05", 0.05), ("0", 0.0)])
def test_regression_thresholds_parse(text, fraction):
    assert parse_regression(text) == pytest.approx(fraction)


@pytest.mark.parametrize("text", ["five", "150%", "-1%"])
def test_bad_thresholds_are_errors(text):
    with pytest.raises(PipelineError, match="--max-regression"):
        parse_regression(text)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gate")
    torch.manual_seed(0)
    base = folder / "lenet.onnx"
    export_onnx(create_model("lenet5").eval(), default_preprocess(1, 28, 28), base, exporter="torchscript")
    # LeNet takes ~0.05 ms: 150 extra convolutions make it several times slower, far beyond any noise
    slow = slowed(base, 150, folder / "lenet-slow.onnx")
    return base, slow


def test_injected_slowdown_keeps_the_outputs(models):
    base, slow = models
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    run = lambda path: ort.InferenceSession(str(path)).run(None, {"input": x})[0]  # noqa: E731
    assert np.abs(run(base) - run(slow)).max() == 0


BUSY = "too busy to tell"


def _unless_busy(gate, was_busy, attempts: int = 3):
    """A gate, again when (and only when) it answered 'could not measure: too busy': on a shared 2-core VM a burst
    of other work can cover a whole 3-second gate (seen in full-suite runs on an AMD EPYC, for an A/A pair and
    once for the 56x-slower model, whose 0.05 ms baseline is all noise under load). A false alarm, a missed
    regression, or three busy answers in a row still fail the test."""
    for _ in range(attempts):
        result = gate()
        if not was_busy(result):
            return result
    return result


def test_gate_passes_a_to_a_and_fails_a_real_regression(models, tmp_path):
    base, slow = models
    baseline = tmp_path / "ci" / "baseline.json"
    written = invoke_cli("gate", str(base), "--baseline", str(baseline), "--update-baseline", *FAST)
    assert written.returncode == 0, written.stderr
    record = json.loads(baseline.read_text())
    assert (tmp_path / "ci" / "baseline.onnx").is_file() and record["environment"]["cpu"]
    assert record["environment"]["runtime"] == "onnxruntime" and record["environment"]["threads"] == 2

    same = _unless_busy(
        lambda: invoke_cli("gate", str(base), "--baseline", str(baseline), "--max-regression", "50%", "--json", *FAST),
        lambda result: result.returncode == 2 and BUSY in result.stdout,
    )
    assert same.returncode == 0, same.stdout + same.stderr
    report = json.loads(same.stdout)
    assert report["verdict"]["label"] == "pass"
    from pipeline.measure import LATENCY_RECORD_KEYS

    for name in ("baseline", "candidate"):  # the one latency record, beside the paired verdict
        latency = report["latency"][name]
        assert tuple(latency) == LATENCY_RECORD_KEYS and latency["median_ms"] == report[f"{name}_ms"]
        assert latency["flops"] > 0 and latency["round_medians_ms"] == report[f"{name}_round_medians_ms"]

    junit = tmp_path / "gate.xml"
    worse = _unless_busy(
        lambda: invoke_cli(
            "gate", str(slow), "--baseline", str(baseline), "--max-regression", "20%", "--junit", str(junit), *FAST
        ),
        lambda result: result.returncode == 2 and BUSY in result.stdout,
    )
    assert worse.returncode == 1, worse.stdout + worse.stderr
    assert worse.stdout.startswith("latency gate: REGRESSION (exit 1)") and "ratio" in worse.stdout
    suite = ET.parse(junit).getroot()
    assert suite.get("failures") == "1" and suite.find("testcase/failure").get("type") == "LatencyRegression"


def test_gate_cannot_measure_says_so_with_exit_2(models, tmp_path):
    from pipeline.gate.gate import GateSettings, run_gate, write_baseline
    from pipeline.targets import load_target

    base, _ = models
    cpu, quick = load_target("cpu"), GateSettings(rounds=10, runs=300, max_regression=0.5)
    missing = run_gate(base, tmp_path / "none.json", cpu, quick)
    assert missing["exit_code"] == 2 and "--update-baseline" in missing["verdict"]["reason"]
    baseline = tmp_path / "b.json"
    write_baseline(base, baseline, cpu, quick)
    record = json.loads(baseline.read_text())
    record["environment"]["cpu"] = "Some Other CPU"
    baseline.write_text(json.dumps(record))
    warned = _unless_busy(
        lambda: run_gate(base, baseline, cpu, quick),
        lambda report: report["exit_code"] == 2 and BUSY in report["verdict"]["reason"],
    )
    assert warned["exit_code"] == 0 and "environment differs" in warned["warnings"][0]
    strict = invoke_cli(
        "gate",
        str(base),
        "--baseline",
        str(baseline),
        "--strict-environment",
        "--junit",
        str(tmp_path / "j.xml"),
        *FAST,
    )
    assert strict.returncode == 2 and "Some Other CPU" in strict.stdout
    assert ET.parse(tmp_path / "j.xml").getroot().find("testcase/error").get("type") == "CouldNotMeasure"
    (tmp_path / "b.onnx").write_bytes((tmp_path / "b.onnx").read_bytes() + b"\0")  # tampered baseline model
    tampered = run_gate(base, baseline, cpu, quick)
    assert tampered["exit_code"] == 2 and "was changed after the baseline was written" in tampered["verdict"]["reason"]
