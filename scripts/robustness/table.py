#!/usr/bin/env python3
"""Per-family table (detected k/n per run) from run.sh's results directory."""
import json, pathlib, sys

runs = {}
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.jsonl")):
    lines = [json.loads(l) for l in f.read_text().splitlines() if l.strip()]
    runs[f.stem] = ({l["family"]: l for l in lines if "family" in l},
                    next((l for l in lines if l.get("summary")), {}))
names = list(runs)
families = sorted({fam for fams, _ in runs.values() for fam in fams})
print("| family | " + " | ".join(names) + " |")
print("|---|" + "---|" * len(names))
for fam in families:
    cells = []
    for n in names:
        r = runs[n][0].get(fam)
        cells.append(f"{r['detected']}/{r['originals']}" if r else "-")
    print(f"| {fam} | " + " | ".join(cells) + " |")
for key, label in [("families_detected_5_of_6", "families >= 5/6"),
                   ("negative_streams_escalations", "false escalations (negative streams)"),
                   ("negative_frames_checked", "negative frames checked"),
                   ("negative_frames_matched", "negative frames matched"),
                   ("entries_per_minute", "bank entries / min of video"),
                   ("detect_us_per_frame", "detect us / sampled frame")]:
    cells = []
    for n in names:
        v = runs[n][1].get(key, "-")
        cells.append(f"{v:.0f}" if isinstance(v, float) else str(v))
    print(f"| {label} | " + " | ".join(cells) + " |")
wrong = {n: sum(r["wrong_original"] for r in runs[n][0].values()) for n in names}
print("| escalations naming another original | " + " | ".join(str(wrong[n]) for n in names) + " |")
