"""Bar chart of bench/results/latest.json: requests/s per scenario and server."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

summary = json.load(open(sys.argv[1]))
scenarios = list(summary["scenarios"])
servers = sorted({s for sc in summary["scenarios"].values() for s in sc})
fig, ax = plt.subplots(figsize=(11, 5))
width = 0.8 / max(len(servers), 1)
for i, server in enumerate(servers):
    ys = [(summary["scenarios"][sc].get(server) or {}).get("rps") or 0 for sc in scenarios]
    ax.bar([x + i * width for x in range(len(scenarios))], ys, width, label=server)
ax.set_xticks([x + width * (len(servers) - 1) / 2 for x in range(len(scenarios))])
ax.set_xticklabels(scenarios)
ax.set_ylabel("requests/s (median)")
ax.set_title(f"rwsgi and peers — {summary['machine']}, {summary['options']['workers']} worker(s)")
ax.legend()
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=100)
