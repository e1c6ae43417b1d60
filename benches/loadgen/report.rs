//! Results, the target checks of issue 7, and their output as a text table, Markdown or JSON.

use std::fmt::Write as _;

use serde::Serialize;

/// One scenario run against one target.
#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct Row {
    pub(crate) scenario: String,
    pub(crate) target: String,
    pub(crate) calls: u64,
    pub(crate) errors: u64,
    pub(crate) mismatched: u64,
    pub(crate) foreign: u64,
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p90_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
    pub(crate) max_ms: Option<f64>,
    pub(crate) calls_per_sec: Option<f64>,
    /// Proxy (or gateway) RSS at the end of the run, children excluded.
    pub(crate) rss_mib: Option<f64>,
    /// CPU time the proxy (or gateway) process used per call in the measured window: a
    /// figure that, unlike calls/s, holds up while other work shares the cores.
    pub(crate) cpu_us_per_call: Option<f64>,
    pub(crate) note: String,
    /// With `--rounds`: the calls/s of every round, in the order they ran.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) round_rates: Vec<f64>,
}

impl Row {
    /// The table cells, in column order, for the text and the Markdown report.
    fn cells(&self) -> [String; 14] {
        [
            self.scenario.clone(),
            self.target.clone(),
            self.calls.to_string(),
            self.errors.to_string(),
            self.mismatched.to_string(),
            self.foreign.to_string(),
            opt(self.p50_ms, 3),
            opt(self.p90_ms, 3),
            opt(self.p99_ms, 3),
            opt(self.max_ms, 3),
            opt(self.calls_per_sec, 0),
            opt(self.rss_mib, 1),
            opt(self.cpu_us_per_call, 1),
            self.note.clone(),
        ]
    }

    pub(crate) fn new(scenario: &str, target: &str) -> Row {
        Row {
            scenario: scenario.into(),
            target: target.into(),
            ..Row::default()
        }
    }

    /// Fills the latency columns from samples in nanoseconds.
    pub(crate) fn set_latencies(&mut self, samples: &mut [u64]) {
        samples.sort_unstable();
        let pick = |q: f64| -> Option<f64> {
            if samples.is_empty() {
                return None;
            }
            let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples.get(i).map(|ns| *ns as f64 / 1e6)
        };
        self.p50_ms = pick(0.50);
        self.p90_ms = pick(0.90);
        self.p99_ms = pick(0.99);
        self.max_ms = samples.last().map(|ns| *ns as f64 / 1e6);
    }
}

/// A target of issue 7 and whether this run met it (`None`: not measured).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Check {
    pub(crate) name: String,
    pub(crate) measured: String,
    pub(crate) target: String,
    pub(crate) pass: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct Report {
    pub(crate) machine: String,
    pub(crate) command: String,
    pub(crate) rows: Vec<Row>,
    pub(crate) checks: Vec<Check>,
    pub(crate) notes: Vec<String>,
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

fn verdict(pass: Option<bool>) -> &'static str {
    match pass {
        Some(true) => "PASS",
        Some(false) => "FAIL",
        None => "n/a",
    }
}

impl Report {
    pub(crate) fn find(&self, scenario: &str, target: &str) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.scenario == scenario && r.target == target)
    }

    pub(crate) fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "machine: {}", self.machine);
        let _ = writeln!(
            out,
            "{:<10} {:<22} {:>8} {:>6} {:>5} {:>5} {:>8} {:>8} {:>8} {:>8} {:>10} {:>8} {:>8}  note",
            "scenario",
            "target",
            "calls",
            "errors",
            "mism",
            "forgn",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "calls/s",
            "RSS MiB",
            "cpu us"
        );
        for r in &self.rows {
            let [
                sc,
                tg,
                calls,
                err,
                mism,
                forgn,
                p50,
                p90,
                p99,
                max,
                rate,
                rss,
                cpu,
                note,
            ] = r.cells();
            let _ = writeln!(
                out,
                "{sc:<10} {tg:<22} {calls:>8} {err:>6} {mism:>5} {forgn:>5} {p50:>8} {p90:>8} {p99:>8} {max:>8} {rate:>10} {rss:>8} {cpu:>8}  {note}",
            );
        }
        let _ = writeln!(out, "\ntargets (issue 7):");
        for c in &self.checks {
            let _ = writeln!(
                out,
                "  [{}] {:<44} measured {:<34} target {}",
                verdict(c.pass),
                c.name,
                c.measured,
                c.target
            );
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        out
    }

    pub(crate) fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Machine: {}\n", self.machine);
        let _ = writeln!(out, "Command: `{}`\n", self.command);
        let _ = writeln!(
            out,
            "| scenario | target | calls | errors | mismatched | foreign | p50 ms | p90 ms | p99 ms | max ms | calls/s | RSS MiB | CPU µs/call | note |"
        );
        let _ = writeln!(
            out,
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"
        );
        for r in &self.rows {
            let _ = writeln!(out, "| {} |", r.cells().join(" | "));
        }
        let _ = writeln!(out, "\n| target (issue 7) | measured | required | result |");
        let _ = writeln!(out, "|---|---|---|---|");
        for c in &self.checks {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                c.name,
                c.measured,
                c.target,
                verdict(c.pass)
            );
        }
        for n in &self.notes {
            let _ = writeln!(out, "\n- {n}");
        }
        out
    }

    /// The checks of issue 7 from the rows present.
    pub(crate) fn compute_checks(&mut self, idle_sessions: usize) {
        let mut checks = Vec::new();
        let direct_lat = self.find("lat-1x1", "direct").and_then(|r| r.p50_ms);
        for target in ["proxy-sse", "proxy-streamable"] {
            let row = self.find("lat-1x1", target);
            if row.is_none() {
                continue;
            }
            let added = row
                .and_then(|r| r.p50_ms)
                .zip(direct_lat)
                .map(|(p, d)| p - d);
            checks.push(Check {
                name: format!("lat-1x1 {target}: p50 added over direct"),
                measured: added
                    .map(|a| format!("{a:.3} ms"))
                    .unwrap_or_else(|| row.map(|r| r.note.clone()).unwrap_or_default()),
                target: "<= 0.100 ms".into(),
                pass: added.map(|a| a <= 0.100),
            });
        }
        let rate = |s: &str, t: &str| self.find(s, t).and_then(|r| r.calls_per_sec);
        let clean = |s: &str, t: &str| {
            self.find(s, t)
                .map(|r| r.errors == 0 && r.foreign == 0 && r.mismatched == 0)
        };
        for target in ["proxy-sse", "proxy-streamable", "proxy-modern"] {
            if let (Some(p), Some(d)) = (rate("tput-1x16", target), rate("tput-1x16", "direct")) {
                checks.push(Check {
                    name: format!("tput-1x16 {target}: share of direct"),
                    measured: format!("{:.1}% ({p:.0} / {d:.0})", 100.0 * p / d),
                    target: ">= 25%".into(),
                    pass: Some(p / d >= 0.25),
                });
            }
            if let (Some(p), Some(s)) =
                (rate("tput-1x16", target), rate("tput-1x16", "supergateway"))
            {
                checks.push(Check {
                    name: format!("tput-1x16 {target}: vs supergateway"),
                    measured: format!("{:.1}x ({p:.0} / {s:.0})", p / s),
                    target: ">= 6x".into(),
                    pass: Some(p / s >= 6.0),
                });
            }
            if let (Some(p), Some(d)) = (rate("tput-50x1", target), rate("tput-50x1", "direct")) {
                let ok = clean("tput-50x1", target).unwrap_or(false);
                let r = self.find("tput-50x1", target);
                checks.push(Check {
                    name: format!("tput-50x1 {target}: share of direct, clean"),
                    measured: format!(
                        "{:.1}% ({p:.0} / {d:.0}), {} err, {} foreign",
                        100.0 * p / d,
                        r.map(|r| r.errors).unwrap_or(0),
                        r.map(|r| r.foreign).unwrap_or(0)
                    ),
                    target: ">= 60%, 0 errors, 0 foreign".into(),
                    pass: Some(p / d >= 0.60 && ok),
                });
            }
        }
        // Issue 14: the audit log on costs at most 10% of the same transport's throughput.
        // With rounds, the share is the median of each round's own share: the two runs of a
        // round are seconds apart, so a slow spell of the machine falls on both.
        for transport in ["sse", "streamable", "modern"] {
            let (off, on) = (format!("proxy-{transport}"), format!("audit-{transport}"));
            let (Some(p), Some(a)) = (self.find("tput-1x16", &off), self.find("tput-1x16", &on))
            else {
                continue;
            };
            let mut shares: Vec<f64> = p
                .round_rates
                .iter()
                .zip(&a.round_rates)
                .filter(|(p, _)| **p > 0.0)
                .map(|(p, a)| a / p)
                .collect();
            shares.sort_by(f64::total_cmp);
            let (share, measured) = if shares.len() > 1 {
                let median = shares[(shares.len() - 1) / 2];
                (
                    median,
                    format!(
                        "{:.1}% (median of {} rounds, {:.0}–{:.0}%)",
                        100.0 * median,
                        shares.len(),
                        100.0 * shares[0],
                        100.0 * shares[shares.len() - 1]
                    ),
                )
            } else if let (Some(p), Some(a)) = (p.calls_per_sec, a.calls_per_sec) {
                (a / p, format!("{:.1}% ({a:.0} / {p:.0})", 100.0 * a / p))
            } else {
                continue;
            };
            checks.push(Check {
                name: format!("tput-1x16 {on}: share of {off}"),
                measured,
                target: ">= 90%".into(),
                pass: Some(share >= 0.90),
            });
        }
        // Context, not a target: the same client doing GET /healthz on the proxy (one HTTP
        // exchange, no auth, no child) bounds what any HTTP transport can reach here.
        for scenario in ["tput-1x16", "tput-50x1"] {
            if let (Some(f), Some(d)) = (rate(scenario, "http-floor"), rate(scenario, "direct")) {
                let best = ["proxy-sse", "proxy-streamable", "proxy-modern"]
                    .iter()
                    .filter_map(|t| rate(scenario, t))
                    .fold(0.0_f64, f64::max);
                checks.push(Check {
                    name: format!("{scenario} http-floor (GET /healthz): share of direct"),
                    measured: format!(
                        "{:.1}% ({f:.0} / {d:.0}); best proxy row = {:.0}% of the floor",
                        100.0 * f / d,
                        100.0 * best / f
                    ),
                    target: "context: HTTP alone, no MCP".into(),
                    pass: None,
                });
            }
        }
        let idle = format!("idle-{idle_sessions}");
        if let Some(r) = self.find(&idle, "proxy-sse") {
            let limit = 20.0 + 64.0 * idle_sessions as f64 / 1024.0;
            checks.push(Check {
                name: format!("{idle} proxy RSS (children excluded)"),
                measured: opt(r.rss_mib, 1) + " MiB",
                target: format!("<= {limit:.1} MiB"),
                pass: r.rss_mib.map(|m| m <= limit),
            });
        }
        let cold = self
            .find("setup", "proxy-sse everything cold")
            .and_then(|r| r.p50_ms);
        let warm_row = self.find("setup", "proxy-sse everything warm4");
        let warm = warm_row.and_then(|r| r.p50_ms);
        if cold.is_some() || warm.is_some() {
            checks.push(Check {
                name: "setup warm_pool=4 p50 vs cold (server-everything)".into(),
                measured: match (warm, cold) {
                    (Some(w), Some(c)) => format!("{:.1}% ({w:.1} / {c:.1} ms)", 100.0 * w / c),
                    _ => "not run".into(),
                },
                target: "<= 10%".into(),
                pass: warm.zip(cold).map(|(w, c)| w / c <= 0.10),
            });
        }
        if let Some(r) = self.rows.iter().find(|r| r.scenario.starts_with("scale")) {
            checks.push(Check {
                name: format!("{} proxy-sse: zero errors", r.scenario),
                measured: format!(
                    "{} calls, {} err, {} mism, {} foreign",
                    r.calls, r.errors, r.mismatched, r.foreign
                ),
                target: "0 errors".into(),
                pass: Some(r.errors == 0 && r.mismatched == 0 && r.foreign == 0 && r.calls > 0),
            });
        }
        self.checks = checks;
    }
}

/// The round of a target with the median calls/s (the lower middle of an even count), its
/// note naming the range of all rounds; `None` for a target that ran no round.
pub(crate) fn median_round(mut rounds: Vec<Row>) -> Option<Row> {
    let n = rounds.len();
    let rate = |r: &Row| r.calls_per_sec.unwrap_or(0.0);
    let rates: Vec<f64> = rounds.iter().map(rate).collect();
    rounds.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
    let range = (n > 1).then(|| {
        format!(
            "median of {n} rounds ({:.0}–{:.0} calls/s)",
            rate(&rounds[0]),
            rate(&rounds[n - 1])
        )
    });
    let mut row = rounds.into_iter().nth(n.saturating_sub(1) / 2)?;
    if n > 1 {
        row.round_rates = rates;
    }
    if let Some(range) = range {
        row.note = if row.note.is_empty() {
            range
        } else {
            format!("{}; {range}", row.note)
        };
    }
    Some(row)
}
