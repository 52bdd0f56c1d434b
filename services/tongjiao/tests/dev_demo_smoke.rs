//! Runs the real `tongjiao dev --demo --exit-after-demo` binary on a fresh data directory: all four
//! services in one process, the whole handover through the public API, one certificate per seeded
//! unit. Then runs it again on the same directory: seeding and the demo replay, nothing is issued
//! twice.
use std::{
    collections::BTreeSet,
    io::Read,
    path::Path,
    process::{Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use regex::Regex;
use time::{OffsetDateTime, UtcOffset};

const TIMEOUT: Duration = Duration::from_secs(300);

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

fn run_demo(data_dir: &Path) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tongjiao"))
        .args([
            "dev",
            "--demo",
            "--exit-after-demo",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tongjiao dev");
    let mut out = child.stdout.take().expect("stdout pipe");
    let mut err = child.stderr.take().expect("stderr pipe");
    let out_reader = thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).expect("read stdout");
        s
    });
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).expect("read stderr");
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for tongjiao dev") {
            break status;
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err_reader.join().unwrap_or_default();
            panic!(
                "tongjiao dev --demo did not exit within {} s; stderr:\n{stderr}",
                TIMEOUT.as_secs()
            );
        }
        thread::sleep(Duration::from_millis(200));
    };
    Run {
        status,
        stdout: out_reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
    }
}

/// Certificate numbers on the `证号` lines, in order.
fn certificate_numbers(stdout: &str) -> Vec<String> {
    let any = Regex::new(r"晋（\d{4}）垣曲县不动产权第\d{7}号").expect("regex");
    stdout
        .lines()
        .filter(|l| l.starts_with("证号"))
        .filter_map(|l| any.find(l).map(|m| m.as_str().to_owned()))
        .collect()
}

#[test]
fn dev_demo_smoke() {
    let dir = std::env::temp_dir().join(format!("tongjiao-smoke-{}", uuid::Uuid::new_v4()));
    let units = tongjiao_cli::demo_data::units().expect("demo units").len();
    assert!(units > 0);

    let first = run_demo(&dir);
    assert!(
        first.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        first.status,
        first.stdout,
        first.stderr
    );
    let out = &first.stdout;
    // The actual port is printed, not 0.
    let listen = Regex::new(r"监听 listen:\s+127\.0\.0\.1:(\d+)").expect("regex");
    let port: u16 = listen
        .captures(out)
        .and_then(|c| c[1].parse().ok())
        .unwrap_or_else(|| panic!("no listen address in stdout:\n{out}"));
    assert_ne!(port, 0);
    // Tokens for every role.
    for role in [
        "DEVELOPER",
        "HOUSING_BUREAU",
        "TAX_BUREAU",
        "CLERK",
        "REGISTRAR",
        "AUDITOR",
    ] {
        assert!(
            out.contains(&format!("export TJ_TOKEN_{role}='ey")),
            "no {role} token in:\n{out}"
        );
    }
    assert!(out.contains("grpcurl -plaintext"));
    assert!(out.contains("权利人"), "no 权利人 label:\n{out}");
    assert!(out.contains("坐落"), "no 坐落 label:\n{out}");

    // One certificate per seeded unit, all distinct, numbered this year, serials 1..=n without gaps.
    let year = OffsetDateTime::now_utc()
        .to_offset(UtcOffset::from_hms(8, 0, 0).expect("CST"))
        .year();
    let this_year =
        Regex::new(&format!(r"^晋（{year}）垣曲县不动产权第(\d{{7}})号$")).expect("regex");
    let numbers = certificate_numbers(out);
    assert_eq!(numbers.len(), units, "certificates printed:\n{out}");
    let distinct: BTreeSet<&String> = numbers.iter().collect();
    assert_eq!(
        distinct.len(),
        units,
        "duplicate certificate numbers: {numbers:?}"
    );
    let serials: BTreeSet<u64> = numbers
        .iter()
        .map(|n| {
            this_year
                .captures(n)
                .and_then(|c| c[1].parse().ok())
                .unwrap_or_else(|| panic!("{n} is not a {year} certificate number"))
        })
        .collect();
    let expected: BTreeSet<u64> = (1..=units as u64).collect();
    assert_eq!(serials, expected);
    // The sandbox kept its key pair and store in the data dir.
    assert!(dir.join("jwt-private.pem").is_file());
    assert!(dir.join("jwt-public.pem").is_file());
    assert!(dir.join("tongjiao.db").is_file());

    // Again on the same data: seeding and the demo replay; the same certificates come back.
    let second = run_demo(&dir);
    assert!(
        second.status.success(),
        "second run exit {:?}\nstdout:\n{}\nstderr:\n{}",
        second.status,
        second.stdout,
        second.stderr
    );
    let again: BTreeSet<String> = certificate_numbers(&second.stdout).into_iter().collect();
    let first_set: BTreeSet<String> = numbers.into_iter().collect();
    assert_eq!(again, first_set, "a restart issued different certificates");

    std::fs::remove_dir_all(&dir).ok();
}
