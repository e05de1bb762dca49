"""Turn a run's results into bench/RESULTS.md and bench/results.png: ratios first, then tables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

CONTENDER_ORDER = ("ours", "ours-direct", "ours-before", "ours-torchscript", "reference", "litserve")
WHY_MISSED = "bench/README.md#targets-what-was-tried"


@dataclass(frozen=True)
class Target:
    text: str
    measure: Callable[[dict], float | None]  # the ratio (or value) from the results
    limit: float
    higher_is_better: bool
    unit: str = "×"

    def verdict(self, value: float | None) -> str:
        if value is None:
            return "not measured"
        met = value >= self.limit if self.higher_is_better else value <= self.limit
        return "met" if met else "**missed**"


# ---- lookups into results.json -------------------------------------------------------------

def run_of(results: dict, server: str, workload: str = "dataset", concurrency: int = 1) -> dict | None:
    for run in results["servers"].get(server, {}).get("runs", []):
        if run["workload"] == workload and run["concurrency"] == concurrency:
            return run
    return None


BATCHING_KEY = "forward_ms_per_image_by_batch"


def floor_of(results: dict, threads: int, workload: str = "dataset") -> dict | None:
    return results.get("floor", {}).get(str(threads), {}).get(workload)


def floor_workloads(results: dict, threads: str, key: str = "floor") -> dict:
    return {name: run for name, run in results[key][threads].items()
            if name != BATCHING_KEY and isinstance(run, dict)}


def floor_engine(results: dict, key: str = "floor") -> str:
    engines = {floor.get("engine", "torchscript") for floor in results.get(key, {}).values()}
    return ", ".join(sorted(engines)) or "–"


def machine_limit_rps(results: dict) -> float | None:
    """cores ÷ the single-thread floor's time per image: what the cores can do at best."""
    one = floor_of(results, 1)
    if not one:
        return None
    return results["machine"]["cores"] * one["requests"] / one["wall_s"]


def best_floor_p50(results: dict, workload: str = "dataset") -> float | None:
    p50s = [run["p50_ms"] for threads in results.get("floor", {})
            if (run := floor_of(results, int(threads), workload))]
    return min(p50s) if p50s else None


def _ratio(numerator, denominator):
    return numerator / denominator if numerator is not None and denominator else None


def _field(run: dict | None, key: str):
    return run[key] if run else None


def ours_vs_litserve_worst(results: dict, ours: str = "ours") -> float | None:
    ratios = [
        _ratio(_field(run_of(results, ours, concurrency=c), "throughput_rps"),
               _field(run_of(results, "litserve", concurrency=c), "throughput_rps"))
        for c in results["settings"]["concurrency"]
    ]
    ratios = [r for r in ratios if r is not None]
    return min(ratios) if ratios else None


TARGETS = (
    Target("throughput at concurrency 4 ≥ 90 % of the machine's limit",
           lambda r: _ratio(_field(run_of(r, "ours", concurrency=4), "throughput_rps"), machine_limit_rps(r)),
           0.90, True),
    Target("throughput at concurrency 4 ≥ 10× the reference app's",
           lambda r: _ratio(_field(run_of(r, "ours", concurrency=4), "throughput_rps"),
                            _field(run_of(r, "reference", concurrency=4), "throughput_rps")),
           10.0, True),
    Target("p50 at concurrency 1 ≤ 1.15× the best floor",
           lambda r: _ratio(_field(run_of(r, "ours"), "p50_ms"), best_floor_p50(r)), 1.15, False),
    Target("12 MP JPEG p50 ≤ 2× a 256×256 JPEG's (upscaled 12 MP)",
           lambda r: _ratio(_field(run_of(r, "ours", "12mp"), "p50_ms"), _field(run_of(r, "ours"), "p50_ms")),
           2.0, False),
    Target("12 MP JPEG p50 ≤ 2× a 256×256 JPEG's (detailed 12 MP)",
           lambda r: _ratio(_field(run_of(r, "ours", "12mp-detailed"), "p50_ms"), _field(run_of(r, "ours"), "p50_ms")),
           2.0, False),
    Target("the whole server ≤ 350 MB RSS, two workers, under load with batches",
           lambda r: r["servers"].get("ours", {}).get("peak_rss_mb"), 350, False, " MB"),
    Target("throughput at concurrency 4 not below today's (ours before the change; `--baseline`)",
           lambda r: _ratio(_field(run_of(r, "ours", concurrency=4), "throughput_rps"),
                            _field(run_of(r, "ours-before", concurrency=4), "throughput_rps")),
           1.0, True),
    Target("ahead of LitServe at every concurrency (worst throughput ratio)",
           ours_vs_litserve_worst, 1.0, True),
    Target("cold start ≤ 5 s",
           lambda r: r["servers"].get("ours", {}).get("cold_start_s"), 5.0, False, " s"),
)


# ---- rendering -------------------------------------------------------------------------------

def _fmt(value, digits=1):
    return "–" if value is None else f"{value:,.{digits}f}"


def render(results: dict, plot_name: str = "results.png") -> str:
    machine = results["machine"]
    model = results["model"]
    settings = results["settings"]
    lines = [
        "# Benchmark results",
        "",
        "Generated by `make bench` (`python -m bench.run`); do not edit by hand, re-run it. "
        "How it works and what was tried for each target: [bench/README.md](README.md).",
        "",
        f"- **Run**: {results['date']}, commit `{results['commit']}`",
        f"- **Machine**: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gb']} GB, "
        f"{machine['os']}, Python {machine['python']}; "
        + ", ".join(f"{k} {v}" for k, v in machine["packages"].items()),
        f"- **Load average** (1, 5, 15 min) at start: {', '.join(f'{x:.2f}' for x in results['load_average_start'])}; "
        f"at end: {', '.join(f'{x:.2f}' for x in results.get('load_average_end', ()))}",
        f"- **Model**: `{model.get('file')}`, {model.get('name', '?')} {model.get('version', '?')}",
        f"- **Load**: locust, closed loop, {settings['requests']} requests of {results['workloads']['dataset']} "
        f"at each concurrency {', '.join(map(str, settings['concurrency']))}; {settings['big_requests']} "
        "requests of each 12 MP JPEG at concurrency 1; "
        f"{settings['warmup_requests']} warm-up requests first (not counted)",
        "",
        "## Ours against the targets",
        "",
        "Ratios, since absolute times vary from machine to machine. The machine's limit is "
        f"cores ÷ the single-thread floor's time per image = **{_fmt(machine_limit_rps(results))} req/s**.",
        "",
        "| target | measured | verdict |",
        "| --- | ---: | --- |",
    ]
    for target in TARGETS:
        value = target.measure(results)
        shown = "–" if value is None else (f"{value:.2f}×" if target.unit == "×" else f"{value:,.1f}{target.unit}")
        lines.append(f"| {target.text} | {shown} | {target.verdict(value)} |")
    same_engine = ours_vs_litserve_worst(results, "ours-torchscript")
    if same_engine is not None:
        lines += ["", (
            f"Our service runs the model with ONNX Runtime (`{floor_engine(results)}` in the floor rows); "
            "LitServe and the reference app run the TorchScript file. On the same engine as theirs "
            f"(*ours, TorchScript engine*), our worst throughput ratio against LitServe is **{same_engine:.2f}×**."
        )]
    lines += _front_lines(results)
    if any(t.verdict(t.measure(results)) == "**missed**" for t in TARGETS):
        lines += ["", f"Missed targets are explained, with what was tried, in [{WHY_MISSED}](README.md#targets-what-was-tried)."]
    lines += ["", f"![throughput and latency by concurrency]({plot_name})", ""]
    lines += _runs_table(results) + [""] + _servers_table(results) + [""]
    return "\n".join(lines)


def _front_lines(results: dict) -> list[str]:
    """What nginx in front costs or gains: ours (behind nginx) over ours-direct (gunicorn alone)."""
    front, direct = results["servers"].get("ours"), results["servers"].get("ours-direct")
    if not front or not direct:
        return []
    ratios = []
    for concurrency in results["settings"]["concurrency"]:
        ratio = _ratio(_field(run_of(results, "ours", concurrency=concurrency), "throughput_rps"),
                       _field(run_of(results, "ours-direct", concurrency=concurrency), "throughput_rps"))
        p50 = _ratio(_field(run_of(results, "ours", concurrency=concurrency), "p50_ms"),
                     _field(run_of(results, "ours-direct", concurrency=concurrency), "p50_ms"))
        if ratio is not None and p50 is not None:
            ratios.append(f"{ratio:.2f}× the req/s and {p50:.2f}× the p50 at {concurrency}")
    extra_mb = front["peak_rss_mb"] - direct["peak_rss_mb"]
    return ["", (
        "**The front** (nginx in front of gunicorn, docs/front.md), over the same gunicorn serving "
        f"clients itself (*{direct['title']}*): {'; '.join(ratios)} concurrent clients; "
        f"{_fmt(extra_mb)} MB more peak RSS for the whole process tree ({front['processes']} processes "
        f"against {direct['processes']})."
    )]


def _runs_table(results: dict) -> list[str]:
    reference_rps = {c: _field(run_of(results, "reference", concurrency=c), "throughput_rps")
                     for c in results["settings"]["concurrency"]}
    lines = [
        "## Every run",
        "",
        "Latencies in milliseconds, client side (locust), including the upload. The floor is one "
        "image at a time in one process, no HTTP: its req/s is 1 ÷ the mean time per image. "
        "*×ref* is the throughput over the reference app's at the same load; *×floor* is p50 "
        "over the best floor's p50 for the same images. *client CPU* is the load tool's own "
        "CPU time per request, taken from the same cores.",
        "",
        "| contender | images | concurrency | requests | errors | p50 | p95 | p99 | req/s | ×ref | ×floor | client CPU ms/req |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += _floor_rows(results, "floor", f"floor ({floor_engine(results)})")
    lines += _floor_rows(results, "floor_torchscript", "floor (torchscript)")
    for name in CONTENDER_ORDER:
        server = results["servers"].get(name)
        if not server:
            continue
        for run in server["runs"]:
            vs_ref = reference_rps.get(run["concurrency"]) if run["workload"] == "dataset" else None
            lines.append(
                f"| {server['title']} | {run['workload']} | {run['concurrency']} | {run['requests']} | "
                f"{run['errors']} | {_fmt(run['p50_ms'])} | {_fmt(run['p95_ms'])} | {_fmt(run['p99_ms'])} | "
                f"{_fmt(run['throughput_rps'])} | {_fmt(_ratio(run['throughput_rps'], vs_ref), 1)} | "
                f"{_fmt(_ratio(run['p50_ms'], best_floor_p50(results, run['workload'])), 2)} | "
                f"{_fmt(run['client_cpu_ms_per_request'], 2)} |"
            )
    lines += ["", "Images: " + "; ".join(f"*{k}*: {v}" for k, v in results["workloads"].items()) + "."]
    return lines + _batching_lines(results)


def _floor_rows(results: dict, key: str, title: str) -> list[str]:
    lines = []
    for threads in sorted(results.get(key, {}), key=int):
        for workload, run in floor_workloads(results, threads, key).items():
            lines.append(
                f"| {title}, {threads} thread{'s' if threads != '1' else ''} | {workload} | – | {run['requests']} | "
                f"{run['errors']} | {_fmt(run['p50_ms'])} | {_fmt(run['p95_ms'])} | {_fmt(run['p99_ms'])} | "
                f"{_fmt(run['throughput_rps'])} | | {_fmt(_ratio(run['p50_ms'], best_floor_p50(results, workload)), 2)} | |"
            )
    return lines


def _batching_lines(results: dict) -> list[str]:
    """Forward time per image by batch size: whether micro-batching could pay here."""
    rows = {f"{floor.get('engine', 'torchscript')}, {threads}": floor[BATCHING_KEY]
            for key in ("floor", "floor_torchscript")
            for threads, floor in results.get(key, {}).items() if BATCHING_KEY in floor}
    if not rows:
        return []
    sizes = sorted({int(size) for row in rows.values() for size in row})
    lines = [
        "",
        "Micro-batching: the forward pass alone, milliseconds per image, by batch size (floor "
        "process, random input). Batching pays only if images cost less in larger batches.",
        "",
        "| engine, threads | " + " | ".join(f"batch {size}" for size in sizes) + " |",
        "| --- | " + " | ".join("---:" for _ in sizes) + " |",
    ]
    for threads in rows:
        lines.append(f"| {threads} | " + " | ".join(_fmt(rows[threads].get(str(size), rows[threads].get(size)), 2)
                                                   for size in sizes) + " |")
    return lines


def _servers_table(results: dict) -> list[str]:
    lines = [
        "## Each server",
        "",
        "Cold start: process start to the first 200 from its readiness check (`/health`; the "
        "reference app has none, so its first 200 from `POST /predict`). Memory: the peak, "
        "sampled every 0.2 s during the measured runs, summed over the server's processes "
        "(*workers*: all but the parent process, i.e. gunicorn's workers or LitServe's "
        "API-server and inference processes); PSS counts pages shared between them once.",
        "",
        "| contender | configuration | cold start s | req/s at c=4 | processes | RSS all MB | RSS workers MB | PSS all MB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in CONTENDER_ORDER:
        server = results["servers"].get(name)
        if server:
            lines.append(
                f"| {server['title']} | {server['config']} | {_fmt(server['cold_start_s'], 2)} | "
                f"{_fmt(_field(run_of(results, name, concurrency=4), 'throughput_rps'))} | "
                f"{server['processes']} | {_fmt(server['peak_rss_mb'], 0)} | "
                f"{_fmt(server['peak_rss_children_mb'], 0)} | {_fmt(server['peak_pss_mb'], 0)} |"
            )
    batches = results["settings"].get("batch_requests")
    if batches:
        lines += ["", (
            f"Ours also served {batches} POST /predict/batch of {results['settings']['batch_files']} images at "
            f"concurrency {results['settings']['batch_concurrency']} (both workers in a batch at once) within the "
            "sampled window, so its peaks include batches; the reference app and LitServe have no batch route."
        )]
    return lines


def plot(results: dict, path: Path) -> None:
    """Throughput and p50 by concurrency, with the machine's limit and the floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    concurrency = results["settings"]["concurrency"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"ours": ("tab:green", "o"), "ours-direct": ("tab:cyan", "v"), "ours-before": ("tab:gray", "P"),
              "ours-torchscript": ("tab:olive", "D"),
              "reference": ("tab:red", "s"), "litserve": ("tab:blue", "^")}
    for name in CONTENDER_ORDER:
        server = results["servers"].get(name)
        if not server:
            continue
        runs = [run_of(results, name, concurrency=c) for c in concurrency]
        points = [(c, run) for c, run in zip(concurrency, runs) if run]
        colour, marker = styles[name]
        left.plot([c for c, _ in points], [r["throughput_rps"] for _, r in points], marker=marker,
                  color=colour, label=server["title"])
        right.plot([c for c, _ in points], [r["p50_ms"] for _, r in points], marker=marker,
                   color=colour, label=server["title"])
    limit = machine_limit_rps(results)
    if limit:
        left.axhline(limit, color="grey", linestyle="--", label="machine limit (cores ÷ floor time)")
        left.axhline(0.9 * limit, color="grey", linestyle=":", label="90 % of the limit")
    floor_p50 = best_floor_p50(results)
    if floor_p50:
        right.axhline(floor_p50, color="grey", linestyle="--", label="best floor p50 (no HTTP)")
    left.set(xlabel="concurrent clients", ylabel="requests/s", title="Throughput (higher is better)",
             xscale="log", xticks=concurrency, xticklabels=[str(c) for c in concurrency])
    right.set(xlabel="concurrent clients", ylabel="p50 latency, ms (log)", title="Median latency (lower is better)",
              xscale="log", yscale="log", xticks=concurrency, xticklabels=[str(c) for c in concurrency])
    left.set_ylim(bottom=0)
    for axis in (left, right):
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    fig.suptitle(f"{results['model'].get('name', 'model')} on {results['machine']['cores']} cores, "
                 f"{results['date']} (load avg at start {results['load_average_start'][0]:.2f})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(results: dict, out: Path) -> None:
    plot(results, out / "results.png")
    (out / "RESULTS.md").write_text(render(results, "results.png"))
