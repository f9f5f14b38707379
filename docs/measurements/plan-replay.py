"""Re-predict recorded host runs with the current `spikegrad plan`: each run of a part of
docs/measurements/hosts-runs.py (scaling, validate, validate3) from its part's one-host calibration
run, measured over predicted samples/s. Run from the repository root:

    python docs/measurements/plan-replay.py DIR [PART ...]

DIR holds the parts' output directories (hosts-runs.py's OUT_DIR of each part, named as the part).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from launch.run.rundir import RunDir  # noqa: E402
from launch.tools.plan import plan  # noqa: E402
from launch.tools.report import Run  # noqa: E402

TARGET_MICRO = {"digits-mb8": 8, "groups-mb8": 8}  # hosts-runs.py TARGET_FLAGS


def replay(root: Path, part: str) -> list[dict]:
    out = []
    for r in json.loads((root / part / f"{part}.json").read_text())["rows"]:
        cal = Run(RunDir(root / part / f"cal-{r['layout']}"))
        p = plan(cal, nodes=r["hosts"], link_gbps=r["mbit"] / 1000, shared_cores=2,
                 micro_batch=TARGET_MICRO.get(r["layout"]))
        out.append(dict(part=part, hosts=r["hosts"], mbit=r["mbit"], layout=r["layout"], measured=r["measured"],
                        predicted=p["predicted_images_per_second"], binding=p["binding"],
                        ratio=r["measured"] / p["predicted_images_per_second"]))
    return out


if __name__ == "__main__":
    root = Path(sys.argv[1])
    parts = sys.argv[2:] or ["scaling", "validate"]
    print("| part | hosts | Mbit/s | workload | measured img/s | predicted | ratio | binding |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = [row for part in parts for row in replay(root, part)]
    for o in rows:
        print(f"| {o['part']} | {o['hosts']} | {o['mbit']:,.0f} | {o['layout']} | {o['measured']:,.0f} | "
              f"{o['predicted']:,.0f} | {o['ratio']:.2f} | {o['binding']} |")
    for part in parts:
        rs = [o["ratio"] for o in rows if o["part"] == part]
        geo = math.exp(sum(abs(math.log(x)) for x in rs) / len(rs))
        print(f"\n{part}: {sum(0.75 <= x <= 1.25 for x in rs)} of {len(rs)} within ±25 %, "
              f"measured/predicted {min(rs):.2f}-{max(rs):.2f}, geometric mean error {geo:.3f}x")
