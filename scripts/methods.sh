#!/usr/bin/env bash
# Pretrains every method with one common budget (same encoder, data, batch and
# epochs; each method's own recipe otherwise), evaluates each with k-NN and the
# linear probe, and writes the comparison table:
#   runs/methods/results.md     the table (also printed)
#   runs/methods/<method>.json  each run's `selfsup pretrain --json` result
# Environment: EPOCHS (default 2), METHODS (default: all), WIDTH (16),
# BATCH (256), OUT (runs/methods), THREADS (0 = all cores), TABLE_ONLY (1:
# train nothing, rebuild the table from OUT's <method>.json files, e.g. after
# runs of a few METHODS each, in different sessions; the baselines come from
# the first listed method whose run had them). Extra arguments go to every
# `selfsup pretrain`.
# Long budgets over several sittings: a method whose folder OUT/<method> holds
# a checkpoint but that has no OUT/<method>.json yet (its run was stopped, by
# a kill or the end of a session) is resumed from that checkpoint, with the
# config it was started with (its epochs and training options; this call's
# evaluation options, such as --protocol, apply) and continues exactly; its
# row's minutes are the whole run's training time, its img/s the last
# sitting's. A method with a <method>.json is trained again from scratch.
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-2}
WIDTH=${WIDTH:-16}
BATCH=${BATCH:-256}
OUT=${OUT:-runs/methods}
THREADS=${THREADS:-0}
TABLE_ONLY=${TABLE_ONLY:-0}
make -s -j"$(nproc)" build/selfsup
METHODS=${METHODS:-$(./build/selfsup pretrain --help | awk '/^methods/{on=1; next} on && /^  [a-z]/{print $1} /^$/{if (on) exit}')}
mkdir -p "$OUT"
first=1
[ "$TABLE_ONLY" = 1 ] && METHODS_RUN="" || METHODS_RUN=$METHODS
for m in $METHODS_RUN; do
    extra=()
    if [ $first = 1 ]; then extra=(--baselines); first=0; fi # raw pixels and random init, once
    if [ -f "$OUT/$m/last.safetensors" ] && [ ! -f "$OUT/$m.json" ]; then
        echo "== $m: resuming $OUT/$m/last.safetensors (the run's own config)" >&2
        run=(--resume "$OUT/$m/last.safetensors" --threads "$THREADS" --json "${extra[@]}" "$@")
        tee_opt=-a
    else
        echo "== $m: $EPOCHS epochs, ResNet-18 w$WIDTH, batch $BATCH" >&2
        rm -f "$OUT/$m.json" "$OUT/$m/last.safetensors" # no stale run to resume if this one stops early
        run=(--method "$m" --epochs "$EPOCHS" --width "$WIDTH" --batch-size "$BATCH"
             --threads "$THREADS" --out "$OUT/$m" --json "${extra[@]}" "$@")
        tee_opt=
    fi
    ./build/selfsup pretrain "${run[@]}" > "$OUT/$m.out" 2> >(tee $tee_opt "$OUT/$m.err" >&2) ||
        { echo "$m failed (see $OUT/$m.err)" >&2; continue; }
    tail -n 1 "$OUT/$m.out" > "$OUT/$m.json"
done
python3 - "$OUT" $METHODS <<'PY' | tee "$OUT/results.md"
import json, os, sys
out, methods = sys.argv[1], sys.argv[2:]
rows, base = [], None
pct = lambda v: "-" if v is None else "%.2f" % v  # null: that protocol was not run
for m in methods:
    p = os.path.join(out, m + ".json")
    if not os.path.exists(p):
        rows.append("| %s | failed | | | | | | | |" % m)
        continue
    r = json.load(open(p))
    e = r["eval"]
    if base is None and "raw" in e:
        base = e
    enc = e["encoder"]
    rss = "%.0f" % r["peak_rss_mb"]  # peak RSS of the process at the end of pretraining
    # collapsed: the features span fewer than 2 effective dimensions (RankMe)
    collapsed = "yes" if enc["eff_rank"] is not None and enc["eff_rank"] < 2 else "no"
    rows.append("| %s | %s | %s | %s | %.0f | %.1f | %s | %.2f / %.1f | %s |" % (
        m, pct(enc["knn_top1_k200"]), pct(enc["knn_top1_k20"]), pct(enc["linear_top1"]), r["img_per_s"],
        r.get("run_train_seconds", r["train_seconds"]) / 60, rss, enc["std_norm"] or 0, enc["eff_rank"] or 0, collapsed))
print("| method | k-NN k=200 | k-NN k=20 | linear | img/s | train min | peak MiB | std / eff. rank | collapsed |")
print("|---|---|---|---|---|---|---|---|---|")
if base:
    for key, name in (("raw", "raw pixels (784)"), ("random_init", "random-init encoder")):
        b = base.get(key)
        if b:
            er = "%.2f / %.1f" % (b["std_norm"], b["eff_rank"]) if b["eff_rank"] is not None else "-"
            print("| %s | %s | %s | %s | | | | %s | |" % (name, pct(b["knn_top1_k200"]), pct(b["knn_top1_k20"]), pct(b["linear_top1"]), er))
for r in rows:
    print(r)
PY
