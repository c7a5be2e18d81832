#!/usr/bin/env python3
"""Tables, target ratios and the SVG chart from compare-servers.sh's results (one JSON object per run).

Usage: compare-servers-report.py RESULTS.jsonl [--rounds N ...the run's settings...] [--write]
Without --write it only prints the Markdown; with it, it also replaces the block between the
compare-servers markers in BENCHMARKS.md and redraws Benchmarks/compare-servers.svg.

Ratios between two servers are taken per round (both runs of a round are minutes apart at most) and then
summarised by their median and range: steadier on a shared machine than a ratio of two medians.
"""
import argparse
import datetime
import json
import os
import platform
import re
import statistics

LOADS = ["blocking full", "blocking resumed", "in-flight full", "in-flight resumed"]
OURS = ["swift-mtls openssl", "swift-mtls gnutls"]
NIO = "SwiftNIO + NIOSSL"


def parse_arguments():
    parser = argparse.ArgumentParser()
    parser.add_argument("results")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", default="4")
    parser.add_argument("--threads", default="4")
    parser.add_argument("--concurrency", default="32")
    parser.add_argument("--echo-bytes", type=int, default=64 << 20)
    parser.add_argument("--client-backend", default="openssl")
    parser.add_argument("--tls", default="1.3")
    parser.add_argument("--elapsed", type=int, default=0)
    parser.add_argument("--write", action="store_true")
    return parser.parse_args()


def spread(values, digits=0):
    """'median (min–max)', or 'n/a'."""
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    form = f"{{:,.{digits}f}}"
    if len(values) == 1:
        return form.format(values[0])
    return f"{form.format(statistics.median(values))} ({form.format(min(values))}–{form.format(max(values))})"


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


class Runs:
    def __init__(self, rows):
        self.handshakes = [r for r in rows if r.get("kind") == "handshakes"]
        self.echo = [r for r in rows if r.get("kind") == "echo"]
        self.accepting_foreign = [r["server"] for r in rows
                                  if r.get("kind") == "check" and r.get("refusesForeignClientCertificate") != "yes"]
        self.checked = any(r.get("kind") == "check" for r in rows)
        self.servers = []
        for r in self.handshakes:
            if r["server"] not in self.servers:
                self.servers.append(r["server"])
        self.echo_servers = []
        for r in self.echo:
            if r["server"] not in self.echo_servers:
                self.echo_servers.append(r["server"])

    def of(self, server, load):
        return [r for r in self.handshakes if r["server"] == server and r["load"] == load]

    def values(self, server, load, key):
        return [r.get(key) for r in self.of(server, load) if r.get(key)]

    def round_value(self, server, load, key, round_):
        for r in self.of(server, load):
            if r["round"] == round_ and r.get(key):
                return r[key]
        return None

    @staticmethod
    def cores(run, key):
        """Cores kept busy during a run: CPU per handshake × handshakes / seconds."""
        per = run.get(key)
        if not per or not run.get("seconds"):
            return None
        return per * run["handshakes"] / 1e6 / run["seconds"]


def load_table(runs, title, cell):
    """One row per server, one column per load; cell(server, load, its runs) gives the text of a cell."""
    lines = ["", title, "", "| server | " + " | ".join(LOADS) + " |", "|---|" + "---|" * len(LOADS)]
    for server in runs.servers:
        cells = [cell(server, load, runs.of(server, load)) if runs.of(server, load) else "–" for load in LOADS]
        lines.append(f"| {server} | " + " | ".join(cells) + " |")
    return lines


def handshake_tables(runs):
    def cpu(server, load, mine):
        text = spread(runs.values(server, load, "serverCPUMicrosecondsPerHandshake"))
        shares = [r["resumedShareOfReconnects"] for r in mine if r.get("resumedShareOfReconnects") is not None]
        return text + (f" [{statistics.median(shares) * 100:.0f} %]" if shares else "")

    def rate(server, load, mine):
        text = spread([r.get("handshakesPerSecond", 0) for r in mine])
        p50 = median([r["latencyMicroseconds"].get("p50") for r in mine if r.get("latencyMicroseconds")])
        p99 = median([r["latencyMicroseconds"].get("p99") for r in mine if r.get("latencyMicroseconds")])
        if p50 is not None and p99 is not None:
            text += f"; {p50 / 1000:.1f} / {p99 / 1000:.1f}"
        errors = sum(sum(r.get("errors", {}).values()) for r in mine)
        return text + (f"; **{errors} errors**" if errors else "")

    def client(server, load, mine):
        busy = median([Runs.cores(r, "clientCPUMicrosecondsPerHandshake") for r in mine]) or 0
        served = median([Runs.cores(r, "serverCPUMicrosecondsPerHandshake") for r in mine]) or 0
        per = median([r.get("clientCPUMicrosecondsPerHandshake") for r in mine]) or 0
        return f"{busy:.2f} / {served:.2f}, {per:.0f} µs"

    return (load_table(runs, "Server CPU per handshake, µs, median (min–max) over the rounds; share of reconnects "
                             "resumed in brackets:", cpu)
            + load_table(runs, "Handshakes/s, median (min–max); latency p50 / p99 in ms (medians); errors if any:", rate)
            + load_table(runs, "Is the client the bottleneck? Cores kept busy, client / server (medians; 2.0 is the whole "
                               "machine), and the client's CPU per handshake:", client))


def echo_table(runs, echo_bytes):
    if not runs.echo:
        return []
    lines = ["", f"Echo, one connection, {echo_bytes >> 20} MiB each way at once (`mtls bench throughput --connections 1`):", "",
             "| echo server | MB/s each way, median (min–max) | MB/s vs NIO, per round | server CPU per MiB each way | "
             "server CPU vs NIO, per round |", "|---|---|---|---|---|"]
    for server in runs.echo_servers:
        mine = [r for r in runs.echo if r["server"] == server]
        ratios = echo_ratios(runs, server)
        cpu_ratios = echo_ratios(runs, server, "serverCPUSeconds")
        mebibytes = echo_bytes / (1 << 20)
        lines.append(f"| {server} | {spread([r.get('megabytesPerSecondEachWay') for r in mine])} | "
                     f"{spread(ratios, 2) + 'x' if ratios and server != NIO else '–'} | "
                     f"{spread([r['serverCPUSeconds'] * 1e3 / mebibytes for r in mine if r.get('serverCPUSeconds')], 2)} ms | "
                     f"{spread(cpu_ratios, 2) + 'x' if cpu_ratios and server != NIO else '–'} |")
    return lines


def echo_ratios(runs, server, key="megabytesPerSecondEachWay"):
    ratios = []
    for round_ in sorted({r["round"] for r in runs.echo}):
        a = [r.get(key) for r in runs.echo if r["server"] == server and r["round"] == round_]
        b = [r.get(key) for r in runs.echo if r["server"] == NIO and r["round"] == round_]
        if a and b and a[0] and b[0]:
            ratios.append(a[0] / b[0])
    return ratios


def per_round_ratios(runs, a, b, load, key="serverCPUMicrosecondsPerHandshake", load_b=None):
    ratios = []
    for round_ in sorted({r["round"] for r in runs.handshakes}):
        x = runs.round_value(a, load, key, round_)
        y = runs.round_value(b, load_b or load, key, round_)
        if x and y:
            ratios.append(x / y)
    return ratios


def p99_ratios(runs, a, b, load):
    ratios = []
    for round_ in sorted({r["round"] for r in runs.handshakes}):
        x = [r["latencyMicroseconds"]["p99"] for r in runs.of(a, load) if r["round"] == round_ and r.get("latencyMicroseconds")]
        y = [r["latencyMicroseconds"]["p99"] for r in runs.of(b, load) if r["round"] == round_ and r.get("latencyMicroseconds")]
        if x and y and y[0]:
            ratios.append(x[0] / y[0])
    return ratios


def target_lines(runs):
    """The issue's targets, each as per-round ratios (median, range) and met / not met."""
    lines = ["", "Against the targets (ratios per round, then median (min–max); servers at their defaults, tickets on):", ""]

    def verdict(ratios, limit):
        if not ratios:
            return "not measured"
        return "met" if statistics.median(ratios) <= limit else "not met"

    def row(text, ratios, limit, unit="x"):
        shown = spread(ratios, 2) + unit if ratios else "n/a"
        lines.append(f"| {text} | {shown} | ≤ {limit}{unit} | {verdict(ratios, limit)} |")

    lines += ["| target | measured | goal | |", "|---|---|---|---|"]
    present = [s for s in OURS if runs.of(s, "blocking full")]
    best = min(present, key=lambda s: median(runs.values(s, "blocking full", "serverCPUMicrosecondsPerHandshake")) or 1e9) \
        if present else None
    if best and runs.of(NIO, "blocking full"):
        row(f"best backend ({best.split()[-1]}) / NIO, server CPU per full handshake, blocking",
            per_round_ratios(runs, best, NIO, "blocking full"), 1.0)
        for load in ["in-flight full"]:
            row(f"best backend ({best.split()[-1]}) / NIO, same, {load.split()[0]}", per_round_ratios(runs, best, NIO, load), 1.0)
    for ours, theirs in [("swift-mtls openssl", "nginx"), ("swift-mtls gnutls", "gnutls-serv")]:
        if runs.of(ours, "blocking full") and runs.of(theirs, "blocking full"):
            for load in ["blocking full", "in-flight full"]:
                row(f"{ours.split()[-1]} backend / {theirs}, server CPU per full handshake, {load.split()[0]}",
                    per_round_ratios(runs, ours, theirs, load), 0.75)
    for ours in present:
        shares = [r.get("resumedShareOfReconnects") for r in runs.of(ours, "blocking resumed")
                  if r.get("resumedShareOfReconnects") is not None]
        if shares:
            met = "met" if min(shares) >= 0.999 else "not met"
            lines.append(f"| {ours.split()[-1]} backend: reconnects resumed, blocking, each ticket once | "
                         f"{spread([s * 100 for s in shares], 1)} % | 100 % | {met} |")
        row(f"{ours.split()[-1]} backend: resumed / full server CPU, blocking",
            per_round_ratios(runs, ours, ours, "blocking resumed", load_b="blocking full"), 0.25)
    for ours in [s for s in OURS if s in runs.echo_servers]:
        ratios = echo_ratios(runs, ours)
        if ratios:
            met = "met" if statistics.median(ratios) >= 1.2 else "not met"
            lines.append(f"| {ours.split()[-1]} backend / NIO, echo MB/s | {spread(ratios, 2)}x | ≥ 1.2x | {met} |")
    for ours in present:
        if runs.of(NIO, "blocking full"):
            row(f"{ours.split()[-1]} backend / NIO, p99 latency, blocking full", p99_ratios(runs, ours, NIO, "blocking full"), 1.0)
    return lines


def svg_chart(runs, settings):
    """Per server: server CPU per handshake for each load (left) and handshakes/s (right); echo below."""
    colours = {"blocking full": "#1f5fa8", "blocking resumed": "#7fb0e6", "in-flight full": "#c0661a",
               "in-flight resumed": "#f2b27a"}
    label_w, panel_w, bar_h, row_gap, top = 210, 330, 9, 10, 70
    width = label_w + 2 * panel_w + 60
    cpu_max = max([median(runs.values(s, l, "serverCPUMicrosecondsPerHandshake")) or 0
                   for s in runs.servers for l in LOADS] + [1])
    rate_max = max([median(runs.values(s, l, "handshakesPerSecond")) or 0 for s in runs.servers for l in LOADS] + [1])
    group_h = len(LOADS) * bar_h + row_gap
    echo_h = (40 + len(runs.echo_servers) * 18) if runs.echo else 0
    height = top + len(runs.servers) * group_h + echo_h + 20
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="10" y="18" font-size="14">mTLS servers, same run: TLS {settings.tls}, ECDSA P-256, GET /hello, '
           f'median of {settings.rounds} interleaved rounds</text>',
           f'<text x="{label_w}" y="38" font-size="12">server CPU µs per handshake (lower is better)</text>',
           f'<text x="{label_w + panel_w + 30}" y="38" font-size="12">handshakes/s (higher is better)</text>']
    x = 10
    for load, colour in colours.items():
        svg.append(f'<rect x="{x}" y="48" width="10" height="10" fill="{colour}"/><text x="{x + 14}" y="57">{load}</text>')
        x += 150
    y = top
    for server in runs.servers:
        svg.append(f'<text x="10" y="{y + 2 * bar_h + 2}">{server}</text>')
        for index, load in enumerate(LOADS):
            cpu = median(runs.values(server, load, "serverCPUMicrosecondsPerHandshake"))
            rate = median(runs.values(server, load, "handshakesPerSecond"))
            by = y + index * bar_h
            if cpu:
                w = (panel_w - 45) * cpu / cpu_max
                svg.append(f'<rect x="{label_w}" y="{by}" width="{w:.1f}" height="{bar_h - 1}" fill="{colours[load]}"/>')
                svg.append(f'<text x="{label_w + w + 3:.1f}" y="{by + bar_h - 1}" font-size="9">{cpu:.0f}</text>')
            if rate:
                x0 = label_w + panel_w + 30
                w = (panel_w - 45) * rate / rate_max
                svg.append(f'<rect x="{x0}" y="{by}" width="{w:.1f}" height="{bar_h - 1}" fill="{colours[load]}"/>')
                svg.append(f'<text x="{x0 + w + 3:.1f}" y="{by + bar_h - 1}" font-size="9">{rate:.0f}</text>')
        y += group_h
    if runs.echo:
        y += 10
        svg.append(f'<text x="10" y="{y + 8}" font-size="12">Echo, one connection, MB/s each way (higher is better)</text>')
        y += 18
        echo_max = max([median([r.get("megabytesPerSecondEachWay") for r in runs.echo if r["server"] == s]) or 0
                        for s in runs.echo_servers] + [1])
        for server in runs.echo_servers:
            value = median([r.get("megabytesPerSecondEachWay") for r in runs.echo if r["server"] == server]) or 0
            w = (panel_w - 45) * value / echo_max
            svg.append(f'<text x="10" y="{y + 10}">{server}</text>')
            svg.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="12" fill="#4a8a4a"/>')
            svg.append(f'<text x="{label_w + w + 3:.1f}" y="{y + 10}" font-size="9">{value:.0f}</text>')
            y += 18
    svg.append("</svg>")
    return "\n".join(svg) + "\n"


def main():
    settings = parse_arguments()
    runs = Runs([json.loads(line) for line in open(settings.results) if line.strip()])
    cpu_model = "unknown"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    lines = [f"Measured {datetime.date.today()} on {os.cpu_count()} cores ({cpu_model}), Linux {platform.release()}, "
             "loopback, client and servers on the same cores, nothing pinned"
             + (f"; the whole run took {settings.elapsed // 60} min {settings.elapsed % 60} s." if settings.elapsed else "."),
             f"Command: `Benchmarks/compare-servers.sh --rounds {settings.rounds} --duration {settings.duration} "
             f"--threads {settings.threads} --concurrency {settings.concurrency}`. Client: `mtls bench handshakes --backend "
             f"{settings.client_backend} --tls {settings.tls}`, GET /hello on every connection, ECDSA P-256 leaves from "
             f"`mtls pki init`. Loads: *blocking* = {settings.threads} threads, one connection at a time each (`--blocking "
             f"--threads {settings.threads}`); *in-flight* = {settings.concurrency} connections in flight on the client's loops. "
             "*full* = the client offers no ticket; *resumed* = `--resume` (a blocking thread offers the ticket its "
             "previous connection received, each once; in flight, all connections share the newest ticket). Servers at "
             "their defaults issue tickets; \"no tickets\" rows turn them off where the server has a switch (NIOSSL has "
             "none) and have no resumed runs.", ""]
    loads = [r["loadAverage"] for r in runs.handshakes if r.get("loadAverage") is not None]
    if loads:
        lines.append(f"Load average (1 min) after each run, other work on the machine included: median {statistics.median(loads):.1f}, "
                     f"range {min(loads):.1f}–{max(loads):.1f}.")
    if runs.checked:
        lines.append("Before the loads, each server was offered a client certificate from another CA (curl): "
                     + ("every one refused it." if not runs.accepting_foreign
                        else "**accepted by " + ", ".join(runs.accepting_foreign) + "**, which therefore verify less."))
    lines += handshake_tables(runs)
    lines += echo_table(runs, settings.echo_bytes)
    lines += target_lines(runs)
    text = "\n".join(lines)
    print(text)
    if not settings.write:
        return
    with open("Benchmarks/compare-servers.svg", "w") as chart:
        chart.write(svg_chart(runs, settings))
    begin, end = "<!-- compare-servers:begin -->", "<!-- compare-servers:end -->"
    doc = open("BENCHMARKS.md").read() if os.path.exists("BENCHMARKS.md") else "# Benchmarks\n"
    block = (f"{begin}\n{text}\n\n![server CPU per handshake, handshakes per second and echo MB/s, every server and load]"
             f"(Benchmarks/compare-servers.svg)\n{end}")
    if begin in doc and end in doc:
        doc = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda m: block, doc, flags=re.S)
    else:
        doc += "\n" + block + "\n"
    with open("BENCHMARKS.md", "w") as out:
        out.write(doc)


if __name__ == "__main__":
    main()
