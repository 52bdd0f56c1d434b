//! The service processes: finding (or building) the real binaries, spawning them on free 127.0.0.1
//! ports, waiting for grpc.health.v1, killing them on every exit path, and reading their CPU time
//! and peak RSS from /proc.
use std::{
    collections::BTreeMap,
    fs::File,
    io::{Read, Seek, SeekFrom},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde::Serialize;
use sqlx::{Connection, postgres::PgConnection};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// The four service binaries, in start order.
pub const SERVICES: [&str; 4] = ["survey-data", "acceptance", "tax-status", "registration"];

/// Directory of the running executable, and the target directory and cargo profile it belongs to.
struct ExeLayout {
    dir: PathBuf,
    target_dir: Option<PathBuf>,
    profile: Option<String>,
}

fn exe_layout() -> anyhow::Result<ExeLayout> {
    let exe = std::env::current_exe().context("locating the benchmark's own executable")?;
    let mut dir = exe
        .parent()
        .context("the executable has no parent directory")?
        .to_path_buf();
    // A test harness may run a copy from target/<profile>/deps.
    if dir.file_name().is_some_and(|n| n == "deps")
        && let Some(p) = dir.parent()
    {
        dir = p.to_path_buf();
    }
    let profile = dir.file_name().and_then(|n| n.to_str()).map(str::to_owned);
    let target_dir = dir.parent().map(Path::to_path_buf);
    Ok(ExeLayout {
        dir,
        target_dir,
        profile,
    })
}

/// Where reports go by default: `<target dir>/tongjiao-bench`, or `target/tongjiao-bench`.
pub fn default_report_dir() -> PathBuf {
    match exe_layout() {
        Ok(ExeLayout {
            target_dir: Some(t),
            profile: Some(p),
            ..
        }) if p == "release" || p == "debug" => t.join("tongjiao-bench"),
        _ => PathBuf::from("target/tongjiao-bench"),
    }
}

/// The service binaries next to this executable, built with cargo first when one is missing (or
/// always, with `force_build`).
pub fn locate_binaries(force_build: bool) -> anyhow::Result<BTreeMap<&'static str, PathBuf>> {
    let layout = exe_layout()?;
    let paths: BTreeMap<&'static str, PathBuf> =
        SERVICES.iter().map(|s| (*s, layout.dir.join(s))).collect();
    let missing: Vec<&str> = paths
        .iter()
        .filter(|(_, p)| !p.is_file())
        .map(|(s, _)| *s)
        .collect();
    if force_build || !missing.is_empty() {
        if !missing.is_empty() {
            eprintln!(
                "service binaries missing next to {}: {}; building them",
                layout.dir.display(),
                missing.join(", ")
            );
        }
        build_services(&layout)?;
    }
    for (s, p) in &paths {
        if !p.is_file() {
            bail!(
                "service binary {s} not found at {} after building",
                p.display()
            );
        }
    }
    Ok(paths)
}

fn build_services(layout: &ExeLayout) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let mut cmd = Command::new(&cargo);
    cmd.arg("build")
        .arg("--bins")
        .arg("--manifest-path")
        .arg(&manifest);
    for p in [
        "tongjiao-survey-data",
        "tongjiao-acceptance",
        "tongjiao-tax-status",
        "tongjiao-registration",
    ] {
        cmd.arg("-p").arg(p);
    }
    match layout.profile.as_deref() {
        Some("release") => {
            cmd.arg("--release");
        }
        Some("debug") | None => {}
        Some(other) => {
            cmd.arg("--profile").arg(other);
        }
    }
    if let Some(t) = &layout.target_dir {
        cmd.arg("--target-dir").arg(t);
    }
    eprintln!("running {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("running {}", cargo.to_string_lossy()))?;
    if !status.success() {
        bail!("building the service binaries failed ({status})");
    }
    Ok(())
}

/// A free TCP port on 127.0.0.1 (bound then released; the service binds it right after).
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// One running service binary.
pub struct ServiceProc {
    pub name: &'static str,
    pub binary: PathBuf,
    pub port: u16,
    pub log: PathBuf,
    child: Option<Child>,
}

impl ServiceProc {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Stops the process (SIGKILL) and reaps it.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn exited(&mut self) -> Option<String> {
        let c = self.child.as_mut()?;
        match c.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }
}

/// The spawned services; dropping it kills them all (also on error and panic).
#[derive(Default)]
pub struct Fleet {
    pub procs: Vec<ServiceProc>,
}

impl Fleet {
    /// Spawns `binary` with `env`, logging to `log`, on `port`.
    pub fn spawn(
        &mut self,
        name: &'static str,
        binary: &Path,
        port: u16,
        env: &[(&str, String)],
        log: PathBuf,
    ) -> anyhow::Result<&ServiceProc> {
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(binary);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .env("TONGJIAO_LISTEN", format!("127.0.0.1:{port}"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        self.procs.push(ServiceProc {
            name,
            binary: binary.to_path_buf(),
            port,
            log,
            child: Some(child),
        });
        Ok(self.procs.last().expect("just pushed"))
    }

    pub fn get(&self, name: &str) -> &ServiceProc {
        self.procs
            .iter()
            .find(|p| p.name == name)
            .expect("service spawned")
    }

    /// Waits until `name` answers grpc.health.v1 Check with SERVING.
    pub async fn wait_healthy(&mut self, name: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let url = self.get(name).url();
        let mut last_error;
        loop {
            let proc_ = self
                .procs
                .iter_mut()
                .find(|p| p.name == name)
                .expect("service spawned");
            if let Some(status) = proc_.exited() {
                bail!(
                    "{name} exited ({status}) before serving; log {}:\n{}",
                    proc_.log.display(),
                    tail(&proc_.log, 4000)
                );
            }
            match health_check(&url).await {
                Ok(true) => return Ok(()),
                Ok(false) => last_error = "NOT_SERVING".into(),
                Err(e) => last_error = e.to_string(),
            }
            if Instant::now() > deadline {
                bail!(
                    "{name} did not answer grpc.health.v1 Check within {timeout:?} ({last_error}); log {}:\n{}",
                    proc_.log.display(),
                    tail(&proc_.log, 4000)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The tail of every service log, for error reports.
    pub fn log_tails(&self, bytes: u64) -> String {
        let mut s = String::new();
        for p in &self.procs {
            s.push_str(&format!(
                "--- {} ({}) ---\n{}\n",
                p.name,
                p.log.display(),
                tail(&p.log, bytes)
            ));
        }
        s
    }

    /// Kills every service, registration (the follower) first.
    pub fn stop(&mut self) {
        for p in self.procs.iter_mut().rev() {
            p.kill();
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn health_check(url: &str) -> anyhow::Result<bool> {
    let channel = Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2))
        .connect()
        .await?;
    let resp = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    Ok(resp.into_inner().status == ServingStatus::Serving as i32)
}

/// A connected channel to `url`.
pub async fn channel(url: &str) -> anyhow::Result<Channel> {
    Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// The last `bytes` of a file (lossy UTF-8).
pub fn tail(path: &Path, bytes: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(bytes)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

// ---------------------------------------------------------------------------------------------
// /proc sampling

/// Clock ticks per second (USER_HZ), from `getconf CLK_TCK`; 100 on every mainstream Linux.
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// (utime + stime, cutime + cstime) in ticks of one process, from /proc/<pid>/stat.
fn proc_ticks(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime 15, cutime 16, cstime 17.
    let num = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok());
    Some((num(11)? + num(12)?, num(13)? + num(14)?))
}

/// Peak resident set size (VmHWM) in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_field_kib(pid, "VmHWM:")
}

/// Current resident set size (VmRSS) in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_field_kib(pid, "VmRSS:")
}

fn status_field_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU ticks of every process whose `comm` is `name` (own time plus reaped children's, so backends
/// that exited are still counted through their parent).
fn ticks_by_comm(name: &str) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut total = 0;
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
            continue;
        };
        if comm.trim_end() == name
            && let Some((own, children)) = proc_ticks(pid)
        {
            total += own + children;
        }
    }
    total
}

/// (busy, total) jiffies of the whole machine from /proc/stat.
fn machine_ticks() -> (u64, u64) {
    let Ok(s) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let Some(line) = s.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    let idle = get(3) + get(4);
    let total: u64 = (0..8).map(get).sum();
    (total - idle, total)
}

/// CPU consumed so far by each tracked process group.
#[derive(Debug, Clone)]
pub struct CpuSnapshot {
    at: Instant,
    ticks: BTreeMap<String, u64>,
    machine: (u64, u64),
}

/// CPU seconds used between two snapshots, per process group, and machine utilisation.
#[derive(Debug, Clone, Serialize, Default)]
pub struct CpuUse {
    /// CPU seconds per process: the four services, `bench` (this client), `postgres` (all its
    /// processes, reaped children included), `redis-server`; and `postgres:<service>`, the part of
    /// PostgreSQL's CPU spent in the backends of that service's sessions (by application_name).
    pub cpu_s: BTreeMap<String, f64>,
    /// Wall seconds between the snapshots.
    pub wall_s: f64,
    /// Busy share of all CPUs of the machine over that time (1.0 = every core busy).
    pub machine_busy: f64,
    /// WAL the PostgreSQL server wrote over that time, in bytes (the whole server's: during a run
    /// that is the suite's); `None` where the position could not be read.
    pub wal_bytes: Option<u64>,
}

/// Samples CPU time of the services, this process, PostgreSQL and Redis.
pub struct CpuMeter {
    pids: Vec<(String, u32)>,
    tick: f64,
    /// PostgreSQL backend pid → the service whose session it serves (its application_name) and
    /// the backend's own ticks when first seen, kept current by [`CpuMeter::watch_backends`].
    backends: Arc<Mutex<BTreeMap<u32, (String, u64)>>>,
}

impl CpuMeter {
    pub fn new(fleet: &Fleet) -> Self {
        let mut pids: Vec<(String, u32)> = fleet
            .procs
            .iter()
            .map(|p| (p.name.to_owned(), p.pid()))
            .collect();
        pids.push(("bench".into(), std::process::id()));
        CpuMeter {
            pids,
            tick: clock_ticks(),
            backends: Arc::default(),
        }
    }

    /// Keeps the map of the services' PostgreSQL backends current (pools open connections as load
    /// grows), so that PostgreSQL's CPU can be split by the service it worked for. Ends with the
    /// returned task's abort or when the database goes.
    pub fn watch_backends(&self, db_url: &str) -> tokio::task::JoinHandle<()> {
        let backends = self.backends.clone();
        let url = db_url.to_owned();
        tokio::spawn(async move {
            let Ok(mut conn) = PgConnection::connect(&url).await else {
                return;
            };
            loop {
                let rows: Result<Vec<(i32, String)>, _> = sqlx::query_as(
                    "SELECT pid, application_name FROM pg_stat_activity \
                     WHERE datname = current_database() AND application_name LIKE 'tongjiao-%'",
                )
                .fetch_all(&mut conn)
                .await;
                let Ok(rows) = rows else { return };
                if let Ok(mut map) = backends.lock() {
                    for (pid, app) in rows {
                        if let Ok(pid) = u32::try_from(pid) {
                            // Counted from when first seen, not from the backend's start: a
                            // connection opened mid-phase must not bring its earlier ticks along.
                            map.entry(pid).or_insert_with(|| {
                                let service = app.trim_start_matches("tongjiao-");
                                let seen = proc_ticks(pid).map_or(0, |t| t.0);
                                (format!("postgres:{service}"), seen)
                            });
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    }

    pub fn snapshot(&self) -> CpuSnapshot {
        let mut ticks = BTreeMap::new();
        for (name, pid) in &self.pids {
            ticks.insert(name.clone(), proc_ticks(*pid).map(|t| t.0).unwrap_or(0));
        }
        ticks.insert("postgres".into(), ticks_by_comm("postgres"));
        // A backend's own ticks, by the service it serves. A backend that ended between two
        // snapshots drops out of the split (not of "postgres" above, which counts reaped children).
        if let Ok(map) = self.backends.lock() {
            for (pid, (service, seen)) in map.iter() {
                if let Some((own, _)) = proc_ticks(*pid) {
                    *ticks.entry(service.clone()).or_insert(0) += own.saturating_sub(*seen);
                }
            }
        }
        ticks.insert("redis-server".into(), ticks_by_comm("redis-server"));
        CpuSnapshot {
            at: Instant::now(),
            ticks,
            machine: machine_ticks(),
        }
    }

    pub fn since(&self, start: &CpuSnapshot) -> CpuUse {
        let end = self.snapshot();
        let mut cpu_s = BTreeMap::new();
        for (k, v) in &end.ticks {
            let before = start.ticks.get(k).copied().unwrap_or(0);
            cpu_s.insert(
                k.clone(),
                crate::stats::round3(v.saturating_sub(before) as f64 / self.tick),
            );
        }
        let busy = end.machine.0.saturating_sub(start.machine.0) as f64;
        let total = end.machine.1.saturating_sub(start.machine.1) as f64;
        CpuUse {
            cpu_s,
            wall_s: crate::stats::round3(end.at.duration_since(start.at).as_secs_f64()),
            machine_busy: if total > 0.0 {
                crate::stats::round3(busy / total)
            } else {
                0.0
            },
            wal_bytes: None,
        }
    }

    /// Total CPU seconds of one service process since it started.
    pub fn total_s(&self, pid: u32) -> f64 {
        proc_ticks(pid)
            .map(|t| crate::stats::round3(t.0 as f64 / self.tick))
            .unwrap_or(0.0)
    }
}

/// The machine the run is on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub mem_total_kib: u64,
    pub kernel: String,
    pub hostname: String,
}

pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let mem_total_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0);
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    Machine {
        nproc: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        cpu_model,
        mem_total_kib,
        kernel: read("/proc/sys/kernel/osrelease"),
        hostname: read("/proc/sys/kernel/hostname"),
    }
}
