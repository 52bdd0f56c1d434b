//! The client subcommands as real processes against a real sandbox (`tongjiao dev --demo` left
//! running): token issue, survey upload (JSON and CSV), batch submit (with --watch), tax push,
//! counter find / show / issue / print, exit codes and error output.
use std::{
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use time::{OffsetDateTime, UtcOffset};
use tongjiao_cli::demo_data;

const BIN: &str = env!("CARGO_BIN_EXE_tongjiao");

/// The sandbox process; killed on drop.
struct Sandbox {
    child: Child,
    dir: PathBuf,
    server: String,
    developer: String,
    clerk: String,
    tax: String,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

fn token_of(line: &str, var: &str) -> Option<String> {
    line.strip_prefix(&format!("export {var}='"))
        .and_then(|rest| rest.strip_suffix('\''))
        .map(str::to_owned)
}

fn start_sandbox() -> Sandbox {
    let dir = std::env::temp_dir().join(format!("tongjiao-cli-{}", uuid::Uuid::new_v4()));
    let mut child = Command::new(BIN)
        .args(["dev", "--demo", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tongjiao dev");
    let stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel::<String>();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                // Nobody listens any more; keep draining so the sandbox never blocks on stdout.
                continue;
            }
        }
    });
    let (etx, erx) = mpsc::channel::<String>();
    thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        let _ = etx.send(s);
    });
    let mut sb = Sandbox {
        child,
        dir,
        server: String::new(),
        developer: String::new(),
        clerk: String::new(),
        tax: String::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.trim_start().strip_prefix("服务 server:") {
                    sb.server = rest.trim().to_owned();
                }
                if let Some(t) = token_of(&line, "TJ_TOKEN_DEVELOPER") {
                    sb.developer = t;
                }
                if let Some(t) = token_of(&line, "TJ_TOKEN_CLERK") {
                    sb.clerk = t;
                }
                if let Some(t) = token_of(&line, "TJ_TOKEN_TAX_BUREAU") {
                    sb.tax = t;
                }
                if line.starts_with("演示完成") {
                    break;
                }
            }
            Err(_) => {
                let _ = sb.child.kill();
                let err = erx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
                panic!("the sandbox demo did not finish; stderr:\n{err}");
            }
        }
    }
    assert!(sb.server.starts_with("http://127.0.0.1:"), "{}", sb.server);
    assert!(!sb.developer.is_empty() && !sb.clerk.is_empty() && !sb.tax.is_empty());
    sb
}

fn tj(sb: &Sandbox, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("TONGJIAO_TOKEN")
        .env_remove("TONGJIAO_SERVER")
        .arg("--server")
        .arg(&sb.server);
    if let Some(t) = token {
        cmd.arg("--token").arg(t);
    }
    cmd.args(args).output().expect("run tongjiao")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

#[track_caller]
fn fails(o: &Output, code: i32) -> (String, String) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    (text(&o.stdout), text(&o.stderr))
}

fn json_of(o: &Output) -> Value {
    let s = ok(o);
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, content).expect("write input file");
    p.display().to_string()
}

/// The demo 楼盘表 plus two new units on building 1 (floor 1 and 2, third unit), as a JSON file.
fn survey_v2_json() -> (String, [String; 2]) {
    let table = demo_data::building_table().expect("demo table");
    let parcel = demo_data::parcel().expect("parcel");
    let new_codes = [
        tongjiao_domain::UnitCode::house(&parcel, 1, 103)
            .expect("code")
            .into_string(),
        tongjiao_domain::UnitCode::house(&parcel, 1, 203)
            .expect("code")
            .into_string(),
    ];
    let buildings: Vec<Value> = table
        .buildings
        .iter()
        .map(|b| {
            let mut units: Vec<Value> = b
                .units
                .iter()
                .map(|u| {
                    json!({
                        "unit_code": u.unit_code, "room_number": u.room_number,
                        "floor_number": u.floor_number, "location": u.location,
                        "planned_usage": u.planned_usage,
                        "measured_gfa_centi_sqm": u.measured_gfa_centi_sqm,
                        "internal_area_centi_sqm": u.internal_area_centi_sqm,
                        "shared_area_centi_sqm": u.shared_area_centi_sqm,
                    })
                })
                .collect();
            if b.building_number == 1 {
                for (i, code) in new_codes.iter().enumerate() {
                    units.push(json!({
                        "unit_code": code, "room_number": format!("1单元{}03", i + 1),
                        "floor_number": i + 1,
                        "location": format!("垣曲县新城镇舜都大道88号同交花园1号楼1单元{}03室", i + 1),
                        "planned_usage": "住宅",
                        "measured_gfa_centi_sqm": 12034, "internal_area_centi_sqm": 10210,
                        "shared_area_centi_sqm": 1824,
                    }));
                }
            }
            json!({
                "building_number": b.building_number, "name": b.name,
                "total_floors": b.total_floors, "floors_above_ground": b.floors_above_ground,
                "structure": b.structure, "planned_usage": b.planned_usage,
                "completion_date": b.completion_date, "units": units,
            })
        })
        .collect();
    let file = json!({
        "project_id": demo_data::PROJECT_ID,
        "parcel_code": demo_data::PARCEL_CODE,
        "buildings": buildings,
    });
    (file.to_string(), new_codes)
}

fn today_plus(days: i64) -> String {
    let d = OffsetDateTime::now_utc()
        .to_offset(UtcOffset::from_hms(8, 0, 0).expect("CST"))
        .date()
        + time::Duration::days(days);
    tongjiao_domain::format_date(d)
}

#[test]
fn client_commands_against_the_sandbox() {
    let sb = start_sandbox();
    let inputs = sb.dir.join("inputs");
    std::fs::create_dir_all(&inputs).expect("inputs dir");
    let units = demo_data::units().expect("units").len();

    // token issue with the sandbox key: a housing-bureau token for the uploads.
    let key = sb.dir.join("jwt-private.pem").display().to_string();
    let housing = ok(&tj(
        &sb,
        None,
        &[
            "token",
            "issue",
            "--role",
            "housing_bureau",
            "--subject",
            "cli-test",
            "--key",
            &key,
        ],
    ))
    .trim()
    .to_owned();
    assert_eq!(housing.split('.').count(), 3, "{housing}");
    let (_, err) = fails(
        &tj(
            &sb,
            None,
            &[
                "token",
                "issue",
                "--role",
                "developer",
                "--subject",
                "x",
                "--key",
                &key,
            ],
        ),
        2,
    );
    assert!(err.contains("--org"), "{err}");

    // survey upload (JSON): version 2 with two more units; the same file again replays.
    let (survey, [unit, unit_opt_out]) = survey_v2_json();
    let survey_file = write(&inputs, "survey-v2.json", &survey);
    let up = json_of(&tj(
        &sb,
        Some(&housing),
        &["survey", "upload", &survey_file, "-o", "json"],
    ));
    assert_eq!(up["version"], 2, "{up}");
    assert_eq!(up["unit_count"], units + 2);
    let again = json_of(&tj(
        &sb,
        Some(&housing),
        &["survey", "upload", &survey_file, "-o", "json"],
    ));
    assert_eq!(
        again["version"], 2,
        "re-running a file must replay: {again}"
    );
    assert_eq!(again["request_id"], up["request_id"]);

    // survey upload (CSV) with a bad row: the error names the line and column, nothing is sent.
    let csv = "building_number,building_name,total_floors,structure,unit_code,room_number,floor_number,location,planned_usage,measured_gfa,internal_area,shared_area\n\
               1,1号楼,6,3,140827001002GB00077F00010101,101,1,某处,住宅,104.61,89.23,15.38\n\
               1,1号楼,6,3,140827001002GB00077F00010102,102,1,某处,住宅,abc,89.23,15.38\n";
    let csv_file = write(&inputs, "bad.csv", csv);
    let (_, err) = fails(
        &tj(
            &sb,
            Some(&housing),
            &["survey", "upload", &csv_file, "--project", "CSV-1"],
        ),
        1,
    );
    assert!(err.contains("line 3, column measured_gfa"), "{err}");
    // The same table without the bad row uploads, grouped into one building.
    let good: String = csv.lines().take(2).map(|l| format!("{l}\n")).collect();
    let good_file = write(&inputs, "good.csv", &good);
    let up = json_of(&tj(
        &sb,
        Some(&housing),
        &[
            "survey",
            "upload",
            &good_file,
            "--project",
            "CSV-1",
            "-o",
            "json",
        ],
    ));
    assert_eq!(up["project_id"], "CSV-1", "{up}");
    assert_eq!(up["version"], 1);
    assert_eq!(up["building_count"], 1);
    assert_eq!(up["unit_count"], 1);
    // CSV without --project is a usage error.
    fails(
        &tj(&sb, Some(&housing), &["survey", "upload", &csv_file]),
        2,
    );

    // batch submit: one buyer for the new unit; the same file again returns the same batch.
    let buyer_id = demo_data::resident_id(
        time::Date::from_calendar_date(1990, time::Month::May, 17).expect("date"),
        521,
    )
    .expect("resident id");
    let batch = json!({
        "project_id": demo_data::PROJECT_ID,
        "handover_date": today_plus(6),
        "material_deadline": today_plus(4),
        "cases": [{
            "unit_code": unit,
            "buyers": [{"name": "柳青", "resident_id": buyer_id}],
            "co_ownership": "sole",
            "contract_number": "YQ2025-SP-0101",
            "same_day_opt_in": true
        }]
    });
    let batch_file = write(&inputs, "batch.json", &batch.to_string());
    let b1 = json_of(&tj(
        &sb,
        Some(&sb.developer),
        &["batch", "submit", &batch_file, "-o", "json"],
    ));
    assert_eq!(b1["counts"]["total"], 1, "{b1}");
    let b2 = json_of(&tj(
        &sb,
        Some(&sb.developer),
        &["batch", "submit", &batch_file, "-o", "json"],
    ));
    assert_eq!(
        b1["batch_id"], b2["batch_id"],
        "re-running a batch file must replay"
    );

    // counter find / show: pending, with the precise missing list.
    let found = json_of(&tj(
        &sb,
        Some(&sb.clerk),
        &["counter", "find", "--unit", &unit, "-o", "json"],
    ));
    let case = &found["cases"][0];
    let case_id = case["case_id"].as_str().expect("case id").to_owned();
    assert_eq!(case["state"], "CASE_STATE_PENDING", "{found}");
    let kinds: Vec<&str> = case["missing"]
        .as_array()
        .expect("missing")
        .iter()
        .filter_map(|m| m["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"MISSING_KIND_DEED_TAX"), "{kinds:?}");
    assert!(
        kinds.contains(&"MISSING_KIND_MAINTENANCE_FUND"),
        "{kinds:?}"
    );
    let table = ok(&tj(
        &sb,
        Some(&sb.clerk),
        &["counter", "find", "--buyer", &buyer_id],
    ));
    assert!(
        table.contains(&case_id) && table.contains("材料未齐"),
        "{table}"
    );
    let shown = ok(&tj(&sb, Some(&sb.clerk), &["counter", "show", &case_id]));
    assert!(shown.contains("状态 state: 材料未齐 (pending)"), "{shown}");
    assert!(shown.contains("契税未缴 (deed tax not paid)"), "{shown}");
    assert!(
        shown.contains("维修资金未缴存 (maintenance fund not deposited)"),
        "{shown}"
    );
    // A pending case cannot be issued.
    let (_, err) = fails(
        &tj(&sb, Some(&sb.clerk), &["counter", "issue", &case_id]),
        1,
    );
    assert!(err.contains("cannot be issued"), "{err}");

    // tax push: two good events and one the server rejects -> exit 1, rejection printed.
    let events = json!([
        {"event_id": "cli-deed-1", "type": "deed_tax_paid", "unit_code": unit, "buyer_id": buyer_id,
         "amount_fen": 1_046_958, "voucher_number": "314082725009999", "occurred_at": "2026-11-20T10:00:00+08:00"},
        {"event_id": "cli-fund-1", "type": "maintenance_fund_deposited", "unit_code": unit,
         "amount_fen": 962_720, "receipt_number": "YQWX202599999"},
        {"event_id": "cli-bad-1", "type": "maintenance_fund_deposited", "unit_code": "140827",
         "amount_fen": 1, "receipt_number": "R"}
    ]);
    let tax_file = write(&inputs, "tax.json", &events.to_string());
    let (out, err) = fails(&tj(&sb, Some(&sb.tax), &["tax", "push", &tax_file]), 1);
    assert!(out.contains("已记录 accepted 2"), "{out}");
    assert!(out.contains("拒收 rejected cli-bad-1"), "{out}");
    assert!(err.contains("1 event(s) rejected"), "{err}");
    let (out, _) = fails(
        &tj(
            &sb,
            Some(&sb.tax),
            &["tax", "push", &tax_file, "-o", "json"],
        ),
        1,
    );
    let summary: Value = serde_json::from_str(out.trim()).expect("tax summary JSON");
    assert_eq!(summary["duplicate"], 2, "{summary}");
    assert_eq!(summary["rejected"], 1);
    assert_eq!(summary["rejections"][0]["event_id"], "cli-bad-1");

    // Registration follows the tax feed: the case becomes READY.
    let started = Instant::now();
    loop {
        let c = json_of(&tj(
            &sb,
            Some(&sb.clerk),
            &["counter", "show", &case_id, "-o", "json"],
        ));
        if c["state"] == "CASE_STATE_READY" {
            assert_eq!(c["missing"].as_array().map(Vec::len), Some(0));
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "case never became ready: {c}"
        );
        thread::sleep(Duration::from_millis(200));
    }

    // counter issue: 转移登记 + certificate, the next serial after the demo's.
    let year = OffsetDateTime::now_utc()
        .to_offset(UtcOffset::from_hms(8, 0, 0).expect("CST"))
        .year();
    let number = format!("晋（{year}）垣曲县不动产权第{:07}号", units + 1);
    let cert = ok(&tj(&sb, Some(&sb.clerk), &["counter", "issue", &case_id]));
    assert!(cert.contains(&format!("证号　　　　  {number}")), "{cert}");
    assert!(cert.contains("权利人　　　  柳青"), "{cert}");
    assert!(cert.contains("1号楼1单元103室"), "{cert}");
    // Again: the same certificate, never a second one.
    let o = tj(&sb, Some(&sb.clerk), &["counter", "issue", &case_id]);
    assert!(ok(&o).contains(&number));
    assert!(text(&o.stderr).contains("已发证"), "{}", text(&o.stderr));

    // counter print, text and JSON.
    let printed = ok(&tj(&sb, Some(&sb.clerk), &["counter", "print", &number]));
    for label in [
        "证号",
        "权利人",
        "共有情况",
        "坐落",
        "不动产单元号",
        "登记机构",
        "登簿日期",
    ] {
        assert!(printed.contains(label), "{label} missing in {printed}");
    }
    let j = json_of(&tj(
        &sb,
        Some(&sb.clerk),
        &["counter", "print", &number, "-o", "json"],
    ));
    assert_eq!(j["certificate_number"], number.as_str());
    assert_eq!(j["unit_code_raw"], unit.as_str());
    let (_, err) = fails(
        &tj(
            &sb,
            Some(&sb.clerk),
            &[
                "counter",
                "print",
                &format!("晋（{year}）垣曲县不动产权第9999999号"),
            ],
        ),
        1,
    );
    assert!(err.contains("NOT_FOUND"), "{err}");

    // batch submit --watch on a batch whose only buyer opted out: the stream ends at once.
    let opt_out = json!({
        "project_id": demo_data::PROJECT_ID,
        "handover_date": today_plus(6),
        "material_deadline": today_plus(4),
        "cases": [{
            "unit_code": unit_opt_out,
            "buyers": [{"name": "石磊", "resident_id": demo_data::resident_id(
                time::Date::from_calendar_date(1988, time::Month::March, 2).expect("date"), 733).expect("id")}],
            "co_ownership": "sole",
            "contract_number": "YQ2025-SP-0102",
            "same_day_opt_in": false
        }]
    });
    let opt_file = write(&inputs, "opt-out.json", &opt_out.to_string());
    let watched = ok(&tj(
        &sb,
        Some(&sb.developer),
        &["batch", "submit", &opt_file, "--watch"],
    ));
    assert!(watched.contains("最终 final:"), "{watched}");
    assert!(watched.contains("未选择 opted out 1"), "{watched}");

    // Errors: no token is a usage error (2); a malformed case id is INVALID_ARGUMENT naming case_id.
    let (_, err) = fails(&tj(&sb, None, &["counter", "find", "--unit", &unit]), 2);
    assert!(err.contains("TONGJIAO_TOKEN"), "{err}");
    let (_, err) = fails(
        &tj(&sb, Some(&sb.clerk), &["counter", "show", "not-a-case"]),
        1,
    );
    assert!(err.contains("INVALID_ARGUMENT"), "{err}");
    assert!(err.contains("- case_id:"), "{err}");
    // The wrong role is refused with the server's reason.
    let (_, err) = fails(&tj(&sb, Some(&sb.tax), &["counter", "issue", &case_id]), 1);
    assert!(err.contains("PERMISSION_DENIED"), "{err}");
    // A malformed batch file fails before anything is sent.
    let bad_batch = write(
        &inputs,
        "bad-batch.json",
        "{\"project_id\": \"P\",\n \"cases\": 5}",
    );
    let (_, err) = fails(
        &tj(&sb, Some(&sb.developer), &["batch", "submit", &bad_batch]),
        1,
    );
    assert!(err.contains("line 2"), "{err}");
}
