"""The quality gate's section of report.md, report.html and the model card: what the gate
let through and withheld (by verdict, reason and site), examples, and how its learnt score
and its rules compare with the graders' gradable label."""

from __future__ import annotations

from retina.reports.tables import format_interval, markdown_table

WHAT_IT_DOES = (
    "Before any grade, every scan gets a verdict: `gradable`, `ungradable` (no field of "
    "view, too dark, too blurred, or a learnt quality score below its threshold) or "
    "`not_fundus` (pooled features or image measures further from the training scans' than "
    "the threshold chosen on validation). A withheld scan gets no grade and no referable "
    "probability; its decision is `{action}`."
)


def quality_gate_section(metrics: dict, titled: bool = True) -> str:
    """The gate's Markdown section from ``metrics["quality_gate"]`` (``retina.quality
    .summary.gate_summary``), under a "## Quality gate" heading unless ``titled`` is off; a
    line saying so when the evaluation has none."""
    title = ["## Quality gate"] if titled else []
    gate = metrics.get("quality_gate")
    if not gate:
        return "\n\n".join([*title, "Not recorded (an evaluation from before the gate)."])
    parts = [
        *title,
        WHAT_IT_DOES.format(action=gate["action"])
        + ("" if gate["fitted"] else " This checkpoint holds no fitted gate: the rules alone."),
        _counts(gate),
    ]
    if gate.get("per_site"):
        parts.append(_per_site(gate["per_site"]))
    if gate.get("against_graders"):
        parts.append(_against_graders(gate["against_graders"]))
    parts.append(_examples(gate["examples"]))
    return "\n\n".join(parts)


def _counts(gate: dict) -> str:
    verdicts = gate["verdicts"]
    rows = [[name, count] for name, count in verdicts.items()]
    rows.append(
        ["withheld (share of all scans)", f"{gate['withheld']} ({gate['withheld_share']:.1%})"]
    )
    rows.append(
        [
            "graders' gradable scans withheld",
            f"{gate['gradable_withheld']} ({gate['gradable_withheld_share']:.1%})",
        ]
    )
    reasons = ", ".join(f"{reason}: {count}" for reason, count in gate["reasons"].items())
    table = markdown_table(["verdict", "scans"], rows)
    return table + (f"\n\nReasons of the withheld scans: {reasons}." if reasons else "")


def _per_site(sites: dict) -> str:
    rows = [
        [site, s["scans"], s["withheld"], f"{s['gradable_withheld_share']:.1%}"]
        for site, s in sites.items()
    ]
    header = ["site", "scans", "withheld", "graders' gradable withheld"]
    return "Per site (the metrics above are on the scans the gate let through):\n\n" + (
        markdown_table(header, rows)
    )


def _against_graders(record: dict) -> str:
    rows = [["learnt score AUC (gradable)", format_interval(record.get("score_auc"))]]
    for name in ("rules", "gate"):
        rows.append(
            [f"{name}: sensitivity for ungradable", format_interval(record[name]["sensitivity"])]
        )
        rows.append([f"{name}: specificity", format_interval(record[name]["specificity"])])
    return (
        f"Against the graders' label ({record['graders_ungradable']} ungradable, "
        f"{record['graders_gradable']} gradable scans; AUC: patient bootstrap, rates: Wilson "
        "95% intervals):\n\n" + markdown_table(["measure", "value [95% CI]"], rows)
    )


def _examples(examples: dict) -> str:
    lines = [
        f"- {verdict}: " + "; ".join(f"`{e['scan_id']}` ({e['reasons']})" for e in listed)
        for verdict, listed in examples.items()
        if listed
    ]
    return "Examples of withheld scans:\n\n" + "\n".join(lines) if lines else "No scan withheld."
