//! The JSON report, the ratios to the floors, the targets, and the human table.
use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    floors::{Floor, Floors},
    phases::{CertificateCheck, Phase},
    procs::Machine,
    stats::{Latency, round1, round3},
};

pub const SCHEMA: &str = "tongjiao-bench/handover/v1";

#[derive(Debug, Clone, Serialize)]
pub struct ServiceReport {
    pub pid: u32,
    pub port: u16,
    pub binary: String,
    /// The binary's modification time (RFC 3339), to tell which build was measured.
    pub binary_modified: String,
    /// CPU seconds (user + system) from start to the end of the run.
    pub cpu_s_total: f64,
    /// VmHWM at the end of the run.
    pub peak_rss_kib: u64,
    pub peak_rss_mb: f64,
    /// VmRSS at the end of the run.
    pub rss_end_kib: u64,
    pub log: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct MachineReport {
    #[serde(flatten)]
    pub machine: Machine,
    pub postgres_version: String,
    /// See `PG_SETTINGS` in main.rs.
    pub postgres_settings: BTreeMap<String, String>,
    pub redis_version: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Checks {
    pub tax_feed: serde_json::Value,
    pub all_ready_before_counters: bool,
    pub certificates: CertificateCheck,
    pub final_batch_counts: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub name: String,
    pub ours: f64,
    pub ours_unit: String,
    pub floor: f64,
    pub floor_unit: String,
    /// ours ÷ floor (for latencies: ours is that many times the floor's).
    pub ratio: f64,
}

/// CPU per item of one workload, every process on the machine, against what its target rate leaves
/// on this machine's cores: where the total is over the budget, no ordering of the work can meet
/// the target here, only less work per item.
#[derive(Debug, Clone, Serialize)]
pub struct CpuBudget {
    pub name: String,
    /// The phases whose CPU is counted.
    pub phases: Vec<String>,
    /// What one item is ("event sent", "certificate", …).
    pub per: String,
    pub items: u64,
    /// µs per item, all processes (PostgreSQL once, not again by service).
    pub total_us: f64,
    /// µs per item by process, with `postgres:<service>` for PostgreSQL's part per service.
    pub by_process_us: BTreeMap<String, f64>,
    /// The target, as items per second.
    pub target_per_s: f64,
    /// Seconds the targets allow after the last item (readiness within 100 ms of the last ack).
    pub allowance_s: f64,
    /// µs per item the targets leave: cores × 10^6 × (1 ÷ target_per_s + allowance_s ÷ items).
    pub budget_us: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: String,
    /// "≥ 5000 certificates/s" and the like.
    pub target: String,
    pub measured: f64,
    pub unit: String,
    pub met: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub ok: bool,
    pub failures: Vec<String>,
    pub started_at: String,
    pub finished_at: String,
    pub command: Vec<String>,
    /// The workspace's git commit and whether the tree had uncommitted changes.
    pub source: serde_json::Value,
    pub config: serde_json::Value,
    pub machine: MachineReport,
    pub services: BTreeMap<String, ServiceReport>,
    pub floors: Option<Floors>,
    pub phases: Vec<Phase>,
    pub checks: Checks,
    pub ratios: Vec<Ratio>,
    pub targets: Vec<Target>,
    pub cpu_budgets: Vec<CpuBudget>,
    pub notes: Vec<String>,
}

fn phase<'a>(phases: &'a [Phase], name: &str) -> Option<&'a Phase> {
    phases.iter().find(|p| p.name == name)
}

fn lat(phases: &[Phase], name: &str, rpc: &str) -> Option<Latency> {
    phase(phases, name).and_then(|p| p.latency.get(rpc).copied())
}

fn ratio(name: &str, ours: f64, ours_unit: &str, floor: &Floor, by_p99: bool) -> Option<Ratio> {
    let f = if by_p99 {
        floor.latency.p99_ms
    } else {
        floor.rate_per_s
    };
    (f > 0.0).then(|| Ratio {
        name: name.into(),
        ours,
        ours_unit: ours_unit.into(),
        floor: f,
        floor_unit: if by_p99 {
            "ms p99".into()
        } else {
            format!("{}/s", floor.unit)
        },
        ratio: round3(ours / f),
    })
}

pub fn ratios(phases: &[Phase], floors: &Floors) -> Vec<Ratio> {
    let mut out = Vec::new();
    let rate = |n: &str| phase(phases, n).map(|p| p.rate_per_s).unwrap_or(0.0);
    let certs = rate("counters");
    out.extend(ratio(
        "counter certificates/s ÷ gap-free batch-of-32 floor",
        certs,
        "certificates/s",
        &floors.pg_gap_free_batch32,
        false,
    ));
    out.extend(ratio(
        "counter certificates/s ÷ gap-free counter-row floor",
        certs,
        "certificates/s",
        &floors.pg_counter_row,
        false,
    ));
    let per_cert = phase(phases, "counters")
        .and_then(|p| p.detail["rpcs_per_certificate"].as_f64())
        .unwrap_or(3.0);
    out.extend(ratio(
        &format!("counter RPCs/s ({per_cert} per certificate) ÷ gRPC unary floor"),
        certs * per_cert,
        "RPCs/s",
        &floors.grpc_unary,
        false,
    ));
    for rpc in [
        "FindCases",
        "RegisterTransfer",
        "IssueCertificate",
        "RegisterTransferAndIssue",
        "counter_total",
    ] {
        if let Some(l) = lat(phases, "counters", rpc) {
            out.extend(ratio(
                &format!("counter {rpc} p99 ÷ gRPC floor p99"),
                l.p99_ms,
                "ms p99",
                &floors.grpc_unary,
                true,
            ));
        }
    }
    let tax = rate("tax_feed");
    out.extend(ratio(
        "tax events/s ÷ COPY floor",
        tax,
        "events/s",
        &floors.pg_copy,
        false,
    ));
    out.extend(ratio(
        "tax events/s ÷ UNNEST floor",
        tax,
        "events/s",
        &floors.pg_unnest,
        false,
    ));
    out.extend(ratio(
        "big table units/s ÷ UNNEST floor",
        rate("big_table_upload"),
        "units/s",
        &floors.pg_unnest,
        false,
    ));
    for rpc in ["FindCases", "GetCase"] {
        if let Some(l) = lat(phases, "readiness_lookups", rpc) {
            out.extend(ratio(
                &format!("readiness look-up {rpc} p99 ÷ gRPC floor p99"),
                l.p99_ms,
                "ms p99",
                &floors.grpc_unary,
                true,
            ));
        }
    }
    out
}

/// CPU per item of the workloads with a rate target: the tax burst (from the first event sent to
/// every case READY, per event sent), the counters (per certificate) and the 10,000-unit 楼盘表 (per
/// unit, its target being a time).
pub fn cpu_budgets(phases: &[Phase], cores: usize, big_table: u32) -> Vec<CpuBudget> {
    let workloads: [(&str, &[&str], &str, f64, f64); 3] = [
        (
            "tax burst: stream to durable ack, then every case READY",
            &["tax_feed", "readiness_visible"],
            "event sent",
            50_000.0,
            0.1,
        ),
        (
            "counter issue path",
            &["counters"],
            "certificate",
            5_000.0,
            0.0,
        ),
        (
            "楼盘表 accepted and durable",
            &["big_table_upload"],
            "unit",
            f64::from(big_table) / 0.5,
            0.0,
        ),
    ];
    let mut out = Vec::new();
    for (name, names, per, target_per_s, allowance_s) in workloads {
        let counted: Vec<&Phase> = names.iter().filter_map(|n| phase(phases, n)).collect();
        let Some(first) = counted.first() else {
            continue;
        };
        let items = first.items;
        if items == 0 || target_per_s <= 0.0 {
            continue;
        }
        let mut by_process: BTreeMap<String, f64> = BTreeMap::new();
        for p in &counted {
            for (k, v) in &p.cpu.cpu_s {
                *by_process.entry(k.clone()).or_default() += v;
            }
        }
        let us = |s: f64| round1(s * 1e6 / items as f64);
        let total = by_process
            .iter()
            .filter(|(k, _)| !k.contains(':'))
            .map(|(_, v)| v)
            .sum::<f64>();
        out.push(CpuBudget {
            name: name.into(),
            phases: names.iter().map(|n| (*n).to_owned()).collect(),
            per: per.into(),
            items,
            total_us: us(total),
            by_process_us: by_process
                .into_iter()
                .filter(|(_, v)| *v > 0.0)
                .map(|(k, v)| (k, us(v)))
                .collect(),
            target_per_s,
            allowance_s,
            budget_us: round1(
                cores.max(1) as f64 * 1e6 * (1.0 / target_per_s + allowance_s / items as f64),
            ),
        });
    }
    out
}

pub fn targets(
    phases: &[Phase],
    services: &BTreeMap<String, ServiceReport>,
    counters: usize,
    big_table: u32,
) -> Vec<Target> {
    let mut out = Vec::new();
    let rate = |n: &str| phase(phases, n).map(|p| p.rate_per_s).unwrap_or(0.0);
    let mut t = |name: String, target: String, measured: f64, unit: &str, met: bool| {
        out.push(Target {
            name,
            target,
            measured,
            unit: unit.into(),
            met,
        })
    };
    let certs = rate("counters");
    t(
        format!("counter issue path at {counters} counters"),
        "≥ 5000 certificates/s".into(),
        certs,
        "certificates/s",
        certs >= 5000.0,
    );
    let p99 = lat(phases, "counters", "counter_total")
        .map(|l| l.p99_ms)
        .unwrap_or(f64::INFINITY);
    t(
        "counter p99 (look-up + 转移登记 transfer + certificate)".into(),
        "≤ 50 ms".into(),
        p99,
        "ms",
        p99 <= 50.0,
    );
    let tax = rate("tax_feed");
    t(
        "tax feed, stream to durable ack".into(),
        "≥ 50000 events/s".into(),
        tax,
        "events/s",
        tax >= 50_000.0,
    );
    let vis = lat(phases, "readiness_visible", "ready_after_last_ack")
        .map(|l| l.max_ms)
        .unwrap_or(f64::INFINITY);
    t(
        "readiness visible after the last ack of the burst".into(),
        "≤ 100 ms".into(),
        vis,
        "ms",
        vis <= 100.0,
    );
    if let Some(single) = lat(phases, "readiness_single", "ready_after_ack") {
        t(
            "readiness visible after the ack, one event at a time (max)".into(),
            "≤ 100 ms".into(),
            single.max_ms,
            "ms",
            single.max_ms <= 100.0,
        );
    }
    let big = phase(phases, "big_table_upload")
        .map(|p| p.wall_s)
        .unwrap_or(f64::INFINITY);
    t(
        if big_table == 10_000 {
            format!("{big_table}-unit 楼盘表 accepted and durable")
        } else {
            format!("{big_table}-unit 楼盘表 accepted and durable (target is for 10000)")
        },
        "≤ 0.5 s".into(),
        big,
        "s",
        big <= 0.5,
    );
    let look = ["FindCases", "GetCase"]
        .iter()
        .filter_map(|r| lat(phases, "readiness_lookups", r))
        .map(|l| l.p99_ms)
        .fold(0.0, f64::max);
    t(
        format!("readiness look-up p99 at {counters} concurrent (worse of FindCases, GetCase)"),
        "≤ 5 ms".into(),
        look,
        "ms",
        look <= 5.0 && phase(phases, "readiness_lookups").is_some(),
    );
    for (name, s) in services {
        t(
            format!("{name} peak RSS"),
            "≤ 150 MB".into(),
            s.peak_rss_mb,
            "MB",
            s.peak_rss_mb <= 150.0,
        );
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The human table

fn thousands(x: f64) -> String {
    let neg = x < 0.0;
    let v = x.abs().round() as u64;
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if neg { format!("-{out}") } else { out }
}

/// Display width in a terminal: CJK and full-width characters take two columns.
fn width(s: &str) -> usize {
    s.chars()
        .map(|c| {
            let u = c as u32;
            if (0x2E80..=0xA4CF).contains(&u)
                || (0xAC00..=0xD7A3).contains(&u)
                || (0xF900..=0xFAFF).contains(&u)
                || (0xFF00..=0xFF60).contains(&u)
            {
                2
            } else {
                1
            }
        })
        .sum()
}

/// `s` padded with spaces to `w` display columns.
fn pad(s: &str, w: usize) -> String {
    format!("{s}{}", " ".repeat(w.saturating_sub(width(s))))
}

fn ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let m = &r.machine;
    o.push_str(&format!(
        "tongjiao handover-day benchmark — {} — {}\n",
        r.finished_at,
        if r.ok { "checks OK" } else { "CHECKS FAILED" }
    ));
    o.push_str(&format!(
        "machine: {} × {}, {:.1} GiB RAM, Linux {}; PostgreSQL {}, Redis {}\n",
        m.machine.nproc,
        m.machine.cpu_model,
        m.machine.mem_total_kib as f64 / 1024.0 / 1024.0,
        m.machine.kernel,
        m.postgres_version,
        m.redis_version
    ));
    if !m.postgres_settings.is_empty() {
        let settings: Vec<String> = m
            .postgres_settings
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        o.push_str(&format!("postgres: {}\n", settings.join(" ")));
    }
    if let Some(commit) = r.source["commit"].as_str() {
        o.push_str(&format!(
            "source: {commit}{}\n",
            if r.source["dirty"] == true {
                " (with uncommitted changes)"
            } else {
                ""
            }
        ));
    }
    let c = &r.config;
    o.push_str(&format!(
        "config: {} units in {} buildings, big table {} units, {} counters over {} channels, {} tax stream(s), {}% duplicates, seed {}\n",
        c["units"], c["buildings"], c["big_table"], c["counters"], c["channels"], c["tax_streams"], c["dup_percent"], c["seed"]
    ));

    if let Some(f) = &r.floors {
        o.push_str("\nFLOORS (this machine without us, measured right before the suite)\n");
        o.push_str(&format!(
            "  {:<44} {:>14} {:<12} {:>7} {:>7} {:>7}\n",
            "floor", "rate", "unit/s", "p50 ms", "p95 ms", "p99 ms"
        ));
        for (name, fl) in [
            ("gRPC unary (Health/Check)", &f.grpc_unary),
            ("PG single-row INSERT commit", &f.pg_single_insert),
            ("PG gap-free counter-row tx", &f.pg_counter_row),
            ("PG gap-free batch of 32 (one tx)", &f.pg_gap_free_batch32),
            ("PG UNNEST bulk insert", &f.pg_unnest),
            ("PG COPY bulk insert", &f.pg_copy),
            ("Redis SET/GET, multiplexed", &f.redis_multiplexed),
        ] {
            o.push_str(&format!(
                "  {:<44} {:>14} {:<12} {:>7} {:>7} {:>7}{}\n",
                format!("{name} @{}", fl.concurrency),
                thousands(fl.rate_per_s),
                fl.unit,
                ms(fl.latency.p50_ms),
                ms(fl.latency.p95_ms),
                ms(fl.latency.p99_ms),
                if fl.errors > 0 {
                    format!("  ({} errors)", fl.errors)
                } else {
                    String::new()
                }
            ));
        }
        for fl in [&f.pg_single_insert, &f.grpc_unary] {
            if let Some(n) = &fl.note {
                o.push_str(&format!("  note: {n}\n"));
            }
        }
    } else {
        o.push_str("\nFLOORS: skipped (--skip-floors)\n");
    }

    o.push_str("\nPHASES\n");
    o.push_str(&format!(
        "  {:<20} {:>9} {:>8} {:<13} {:>12} {:>8} {:>10}\n",
        "phase", "wall s", "items", "unit", "rate /s", "WAL MB", "WAL B/item"
    ));
    for p in &r.phases {
        let (wal_mb, per_item) = match p.cpu.wal_bytes {
            Some(b) => (
                format!("{:.2}", b as f64 / 1e6),
                thousands(b as f64 / p.items.max(1) as f64),
            ),
            None => ("?".into(), "?".into()),
        };
        o.push_str(&format!(
            "  {:<20} {:>9.3} {:>8} {:<13} {:>12} {:>8} {:>10}\n",
            p.name,
            p.wall_s,
            p.items,
            p.unit,
            thousands(p.rate_per_s),
            wal_mb,
            per_item
        ));
    }

    o.push_str("\nLATENCY (ms)\n");
    o.push_str(&format!(
        "  {:<20} {:<30} {:>7} {:>8} {:>8} {:>8} {:>8}\n",
        "phase", "rpc", "count", "p50", "p95", "p99", "max"
    ));
    for p in &r.phases {
        for (rpc, l) in &p.latency {
            o.push_str(&format!(
                "  {:<20} {:<30} {:>7} {:>8} {:>8} {:>8} {:>8}\n",
                p.name,
                rpc,
                l.count,
                ms(l.p50_ms),
                ms(l.p95_ms),
                ms(l.p99_ms),
                ms(l.max_ms)
            ));
        }
    }

    o.push_str("\nCPU SECONDS PER PHASE (machine busy = share of all cores)\n");
    let cols = [
        "survey-data",
        "acceptance",
        "tax-status",
        "registration",
        "bench",
        "postgres",
        "redis-server",
    ];
    o.push_str(&format!("  {:<20} ", "phase"));
    for c in cols {
        o.push_str(&format!("{:>13}", c));
    }
    o.push_str(&format!("{:>8}\n", "busy"));
    for p in &r.phases {
        o.push_str(&format!("  {:<20} ", p.name));
        for c in cols {
            o.push_str(&format!(
                "{:>13.2}",
                p.cpu.cpu_s.get(c).copied().unwrap_or(0.0)
            ));
        }
        o.push_str(&format!("{:>7.0}%\n", p.cpu.machine_busy * 100.0));
    }

    // PostgreSQL's CPU split by the service whose sessions it served.
    let pg_cols: Vec<&str> = ["survey-data", "acceptance", "tax-status", "registration"]
        .into_iter()
        .filter(|c| {
            r.phases
                .iter()
                .any(|p| p.cpu.cpu_s.contains_key(&format!("postgres:{c}")))
        })
        .collect();
    if !pg_cols.is_empty() {
        o.push_str("  postgres, by the service it served:\n");
        o.push_str(&format!("  {:<20} ", "phase"));
        for c in &pg_cols {
            o.push_str(&format!("{:>13}", c));
        }
        o.push('\n');
        for p in &r.phases {
            o.push_str(&format!("  {:<20} ", p.name));
            for c in &pg_cols {
                o.push_str(&format!(
                    "{:>13.2}",
                    p.cpu
                        .cpu_s
                        .get(&format!("postgres:{c}"))
                        .copied()
                        .unwrap_or(0.0)
                ));
            }
            o.push('\n');
        }
    }

    if !r.cpu_budgets.is_empty() {
        o.push_str(&format!(
            "\nCPU PER ITEM (µs of CPU, every process; what the target leaves on {} cores; /proc counts 10 ms ticks)\n",
            r.machine.machine.nproc
        ));
        for b in &r.cpu_budgets {
            let mut parts: Vec<String> = b
                .by_process_us
                .iter()
                .filter(|(k, _)| k.as_str() != "postgres")
                .map(|(k, v)| format!("{k} {v:.1}"))
                .collect();
            // PostgreSQL's own processes (WAL writer, checkpointer, …), beside its backends.
            let backends: f64 = b
                .by_process_us
                .iter()
                .filter(|(k, _)| k.starts_with("postgres:"))
                .map(|(_, v)| v)
                .sum();
            let rest = b.by_process_us.get("postgres").copied().unwrap_or(0.0) - backends;
            if rest > 0.05 {
                parts.push(format!("postgres (other) {rest:.1}"));
            }
            o.push_str(&format!(
                "  {} (per {}): {:.1} µs, budget {:.1} µs at {:.0}/s{}{}\n    {}\n",
                b.name,
                b.per,
                b.total_us,
                b.budget_us,
                b.target_per_s,
                if b.allowance_s > 0.0 {
                    format!(" and {:.0} ms after the last", b.allowance_s * 1e3)
                } else {
                    String::new()
                },
                if b.total_us > b.budget_us {
                    " — over: the cores cannot do it"
                } else {
                    ""
                },
                parts.join(", ")
            ));
        }
    }

    o.push_str("\nSERVICES\n");
    o.push_str(&format!(
        "  {:<14} {:>8} {:>12} {:>14}\n",
        "service", "pid", "CPU s total", "peak RSS MB"
    ));
    for (name, s) in &r.services {
        o.push_str(&format!(
            "  {:<14} {:>8} {:>12.2} {:>14.1}\n",
            name, s.pid, s.cpu_s_total, s.peak_rss_mb
        ));
    }

    if !r.ratios.is_empty() {
        o.push_str("\nRATIOS TO THE FLOORS\n");
        for x in &r.ratios {
            o.push_str(&format!(
                "  {} {:>10} {:<15} / {:>10} {:<14} = {:>7.3}\n",
                pad(&x.name, 58),
                if x.ours_unit.contains("ms") {
                    ms(x.ours)
                } else {
                    thousands(x.ours)
                },
                x.ours_unit,
                if x.floor_unit.contains("ms") {
                    ms(x.floor)
                } else {
                    thousands(x.floor)
                },
                x.floor_unit,
                x.ratio
            ));
        }
    }

    o.push_str("\nTARGETS (issue #3; this machine, everything co-located)\n");
    for t in &r.targets {
        o.push_str(&format!(
            "  {} {} {:>12} {:<15} {}\n",
            pad(&t.name, 70),
            pad(&t.target, 24),
            if t.unit == "ms" || t.unit == "s" {
                format!("{:.3}", t.measured)
            } else {
                thousands(t.measured)
            },
            t.unit,
            if t.met { "met" } else { "NOT MET" }
        ));
    }

    if let Some(ms) = r
        .phases
        .iter()
        .find(|p| p.name == "readiness_visible")
        .and_then(|p| p.detail["first_send_to_all_ready_ms"].as_f64())
    {
        o.push_str(&format!(
            "  also: tax feed, first event sent → every case READY (ingest and follow together): {ms:.1} ms\n"
        ));
    }

    let cc = &r.checks.certificates;
    o.push_str("\nCHECKS\n");
    o.push_str(&format!(
        "  certificates: {} of {} issued, serials {}..={} gap-free: {}, numbers unique: {}, cases unique: {}, numbers carry their serials: {}\n",
        cc.count, cc.expected, cc.serial_first, cc.serial_last, cc.gap_free, cc.numbers_unique, cc.cases_unique, cc.numbers_match_serials
    ));
    o.push_str(&format!("  register: {}\n", cc.db));
    o.push_str(&format!("  tax feed acks: {}\n", r.checks.tax_feed));
    o.push_str(&format!(
        "  all cases READY before the counters opened: {}\n",
        r.checks.all_ready_before_counters
    ));
    for f in &r.failures {
        o.push_str(&format!("  FAILURE: {f}\n"));
    }
    for n in &r.notes {
        o.push_str(&format!("  note: {n}\n"));
    }
    o
}
