"""The benchmarks' results (bench/results/*.json) as one markdown table, then the commands behind them
(`python -m bench.report` prints it; bench/tables.py writes it into the docs)."""
import json

from bench.common import RESULTS


def load(pattern: str) -> list[tuple[str, dict]]:
    return [(p.stem, json.loads(p.read_text())) for p in sorted(RESULTS.glob(pattern))]


def met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def rows() -> list[tuple[str, dict, list[str]]]:
    """(results file, its JSON, table cells) for every result found."""
    out = []
    for name, r in load("throughput*.json"):
        t, d = r["train"], r["data_path"]
        out.append((name, r, [f"training images/s, batch {r['batch_size']}, {r['steps']} steps",
                              f"{t['notebook_images_per_s']:,.0f}", f"{t['project_images_per_s']:,.0f}",
                              f"{t['ratio']:.2f}×", f"≥ {r['target_ratio']}×", met(r["target_met"])]))
        out.append((name, r, ["data path alone images/s", f"{d['notebook_images_per_s']:,.0f}",
                              f"{d['project_images_per_s']:,.0f}", f"{d['ratio']:.0f}×", "", ""]))
    for name, r in load("time_to_accuracy*.json"):
        out += time_to_accuracy_rows(name, r)
    for name, r in load("pipeline_overhead*.json"):
        d, n = r["data_stages"], r["noop"]
        out.append((name, r, ["download+unpack+split+index (dvc repro index)", "", f"{d['dvc_repro_index_seconds']:.1f} s",
                              "", f"≤ {d['target_seconds']:g} s", met(d["target_met"])]))
        out.append((name, r, ["dvc repro, nothing changed", "", f"{n['dvc_repro_seconds']:.1f} s", "",
                              f"≤ {n['target_seconds']:g} s", met(n["target_met"])]))
    for name, r in load("memory*.json"):
        out.append((name, r, [f"peak RSS, {r['stage']} on the CPU ({r['epochs']} epoch)", "",
                              f"{r['peak_rss_mib']:,.0f} MiB", "", f"≤ {r['target_gib']:g} GiB", met(r["target_met"])]))
    return out


SPEEDUP_TARGET = 8.0  # project vs notebook, training seconds to the target


def time_to_accuracy_rows(name: str, r: dict) -> list[tuple[str, dict, list[str]]]:
    """One row per target: each contender's budget (chosen on validation), its training seconds and final test
    accuracy. A file without a protocol predates the fixed budgets: it stopped at the first epoch whose *test*
    accuracy reached the target, and its row says so."""
    p, nb = r["project"], r["notebook"]
    model = p["contender"].split()[-1]
    if "protocol" not in r:
        def took(c):
            return f"{c['seconds_to_target']:.1f} s ({c['epochs']} ep)" if c["reached"] else f"not reached in {c['epochs']} ep"
        return [(name, r, [f"training s to {r['target_test_acc']:.0%} test acc, stopped on test: peeks (project: "
                           f"{model})", took(nb) if nb else "–", took(p), f"{r['speedup']:.1f}×" if r["speedup"] else "",
                           "", "–"])]

    def took(row):
        if row["epochs"] is None:
            return "no budget"
        return f"{row['train_seconds']:.1f} s ({row['epochs']} ep, test {row['test_acc']:.4f})"
    out = []
    for i, p_row in enumerate(p["budgets"]):
        n_row = nb["budgets"][i] if nb else None
        speedup = (r["speedup"] or {}).get(f"{p_row['target']:.2f}")
        out.append((name, r, [f"training s to {p_row['target']:.0%}, fixed budget chosen on validation (project: "
                              f"{model})", took(n_row) if n_row else "–", took(p_row),
                              f"{speedup:.1f}×" if speedup else "", f"≥ {SPEEDUP_TARGET:g}×",
                              met(speedup is not None and speedup >= SPEEDUP_TARGET)]))
    return out


def markdown() -> str:
    """The table, then the command and the machine's load behind each results file."""
    table = rows()
    lines = ["| figure | device | notebook | project | ratio | target | met | results |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r, (what, *cells) in table:
        device = "H100" if "H100" in r["environment"]["device_name"] else r["environment"]["device"]
        lines.append(f"| {what} | {device} | {' | '.join(cells)} | `{name}.json` |")
    lines.append("")
    seen = set()
    for name, r, _ in table:
        if name not in seen:
            seen.add(name)
            env = r["environment"]
            lines.append(f"- `{name}.json`: `{env['command']}` ({env['timestamp']}, load average "
                         f"{'/'.join(map(str, env['load_average_at_start']))} before, other processes used "
                         f"{env['others_cpu_share']:.0%} of the CPUs meanwhile, "
                         f"{env['torch_threads']} torch threads)")
    return "\n".join(lines) + "\n"


def main() -> None:
    print(markdown(), end="")


if __name__ == "__main__":
    main()
