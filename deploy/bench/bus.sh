#!/usr/bin/env bash
# The bus benchmark, against Trove's bus and the bare-lapin floor in the same run:
#   ftrove-bench-bus (ours), ../shared/bench/lapin-limit (bare lapin + tokio) and
#   ../shared/bench/oslo_rpc_bench.py (oslo.messaging 18.3.1, what Trove uses),
# interleaved ROUNDS times on the local RabbitMQ; prints the medians and the ratios.
# Usage: deploy/bench/bus.sh [ROUNDS]       (default 3; needs network access to PyPI once)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SHARED=${FTROVE_SHARED:-$ROOT/../shared}
ROUNDS=${1:-3}
OUT=$ROOT/target/bench/bus
mkdir -p "$OUT"
rm -f "$OUT"/{ours,lapin,oslo}.jsonl

deploy/dev/services.sh
echo "[bench] building" >&2
cargo build --release -q -p ferrotrove-bench -p ferrotrove-agent
cargo build --release -q --manifest-path "$SHARED/bench/lapin-limit/Cargo.toml" --target-dir "$ROOT/target/lapin-limit"
VENV=$ROOT/target/bench-venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import oslo_messaging, pika' 2>/dev/null; then
  echo "[bench] installing oslo.messaging 18.3.1 and pika into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "oslo.messaging==18.3.1" pika
fi

one_line() { python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)))'; }
for i in $(seq "$ROUNDS"); do
  echo "[bench] round $i/$ROUNDS" >&2
  "$ROOT/target/release/ftrove-bench-bus" all | tail -n 1 >> "$OUT/ours.jsonl"
  "$ROOT/target/lapin-limit/release/lapin-limit" all 2>/dev/null | tail -n 1 >> "$OUT/lapin.jsonl"
  "$VENV/bin/python" "$SHARED/bench/oslo_rpc_bench.py" all 2>/dev/null | one_line >> "$OUT/oslo.jsonl"
done

python3 - "$OUT" <<'PY'
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
runs = {n: [json.loads(l) for l in (out / f"{n}.jsonl").read_text().splitlines() if l.strip()] for n in ("ours", "lapin", "oslo")}
def med(name, path):
    vals = []
    for r in runs[name]:
        for k in path.split("."):
            r = r.get(k) if isinstance(r, dict) else None
        if isinstance(r, (int, float)):
            vals.append(r)
    return statistics.median(vals) if vals else None
rows = [
    ("sequential call p50 (ms)", med("ours", "call_p50_ms"), med("lapin", "calls_seq.p50_ms"), med("oslo", "calls.p50_ms")),
    ("sequential call p99 (ms)", med("ours", "call_p99_ms"), med("lapin", "calls_seq.p99_ms"), med("oslo", "calls.p99_ms")),
    ("sequential calls/s", med("ours", "calls_per_s"), med("lapin", "calls_seq.calls_per_s"), med("oslo", "calls.calls_per_s")),
    ("calls/s, 64 in flight", med("ours", "window_calls_per_s"), med("lapin", "calls_w64.calls_per_s"), None),
    ("casts/s, confirmed, 256 in flight", med("ours", "casts_confirmed_per_s"), med("lapin", "casts_confirm_pipelined.throughput_per_s"), med("oslo", "casts.throughput_per_s")),
    ("  the same, transient (heartbeats)", med("ours", "transient_casts_confirmed_per_s"), med("lapin", "casts_confirm_pipelined.throughput_per_s"), med("oslo", "casts.throughput_per_s")),
    ("server RSS idle (MiB)", (med("ours", "server_rss_idle_kib") or 0) / 1024, (med("lapin", "server_rss_kb_idle") or 0) / 1024, (med("oslo", "server_rss_kb_idle") or 0) / 1024),
    ("idle agent RSS (MiB)", (med("ours", "agent_rss_idle_kib") or 0) / 1024, None, None),
]
f = lambda x: "-" if x is None else (f"{x:,.0f}" if x >= 100 else f"{x:.3g}")
print(f"\nmedians of {len(runs['ours'])} rounds, same broker, same run")
print(f"{'':36} {'ferrotrove':>12} {'bare lapin':>12} {'oslo':>12}")
for label, o, l, s in rows:
    print(f"{label:36} {f(o):>12} {f(l):>12} {f(s):>12}")
r = dict((label, (o, l, s)) for label, o, l, s in rows)
def ratio(a, b):
    return a / b if a and b else float("nan")
o, l, s = r["sequential call p50 (ms)"]
print(f"\ncall p50: {ratio(o, l):.2f}x bare lapin (target <= 1.2), {ratio(o, s):.2f}x oslo")
o, l, _ = r["calls/s, 64 in flight"]
print(f"64 in flight: {ratio(o, l):.0%} of bare lapin (target >= 80%)")
o, l, s = r["casts/s, confirmed, 256 in flight"]
print(f"confirmed casts: {ratio(o, s):.1f}x oslo (target >= 10x), {ratio(o, l):.0%} of bare lapin (persistent on a durable queue; lapin-limit's are transient)")
o, l, s = r["  the same, transient (heartbeats)"]
print(f"confirmed transient casts: {ratio(o, s):.1f}x oslo (oslo's casts are transient too), {ratio(o, l):.0%} of bare lapin")
print(f"idle agent RSS: {r['idle agent RSS (MiB)'][0]:.1f} MiB (target < 16)")
PY
