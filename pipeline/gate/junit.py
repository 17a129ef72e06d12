"""JUnit XML for CI systems (GitLab, Jenkins, GitHub test reporters): one test case per gate."""

import xml.etree.ElementTree as ET
from pathlib import Path

from pipeline.fileio import atomic_write_text
from pipeline.gate.stats import PASS, REGRESSION


def write_junit(report: dict, path: Path) -> None:
    verdict = report["verdict"]
    case_name = f"latency[{report['target']}] {Path(report['candidate']).name}"
    suite = ET.Element(
        "testsuite",
        name="edge-pipeline latency gate",
        tests="1",
        failures="1" if report["exit_code"] == REGRESSION else "0",
        errors="1" if report["exit_code"] not in (PASS, REGRESSION) else "0",
        time=f"{report['gate_seconds']:.2f}",
    )
    case = ET.SubElement(
        suite, "testcase", classname="edge_pipeline.gate", name=case_name, time=f"{report['gate_seconds']:.2f}"
    )
    if report["exit_code"] == REGRESSION:
        ET.SubElement(case, "failure", message=verdict["reason"], type="LatencyRegression").text = verdict["reason"]
    elif report["exit_code"] != PASS:
        ET.SubElement(case, "error", message=verdict["reason"], type="CouldNotMeasure").text = verdict["reason"]
    details = {k: report.get(k) for k in ("baseline", "candidate", "baseline_ms", "candidate_ms", "latency_source")}
    ET.SubElement(case, "system-out").text = "\n".join(
        [
            *(f"{k}: {v}" for k, v in details.items()),
            f"ratio: {verdict['ratio']} [{verdict['low']}, {verdict['high']}]",
            *report.get("warnings", []),
        ]
    )
    ET.indent(suite)
    atomic_write_text(Path(path), ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n")
