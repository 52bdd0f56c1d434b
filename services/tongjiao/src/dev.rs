//! `tongjiao dev`: the sandbox. All four services in one process on one port, an embedded SQLite
//! store and in-memory workflow state; seeds a demo county, developer and project through the public
//! API, prints ready-made tokens, and with `--demo` runs a whole handover.
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail};
use serde_json::json;
use sha2::{Digest, Sha256};
use time::{OffsetDateTime, UtcOffset};
use tokio::net::TcpListener;
use tongjiao_auth::{
    DEFAULT_AUDIENCE, DEFAULT_ISSUER, KeyPair, Role, TokenIssuer, TokenSpec, TokenVerifier,
};
use tongjiao_domain::format_date;
use tongjiao_proto::{
    acceptance::{Document, FilingKind, RecordFilingRequest},
    registration::{self as reg, find_cases_request::Key},
    tax::{
        DeedTaxPaid, DeveloperTaxCleared, MaintenanceFundDeposited, PushCompletionsRequest,
        push_completions_request::Payload,
    },
};
use tongjiao_registration::{Clock, Registration, RegistrationConfig, TokenSource, config};
use tongjiao_server::{Authenticator, ServiceSet, init_tracing, serve, shutdown_signal};
use tongjiao_store::Db;
use tongjiao_workflow::Workflow;
use tonic::{Code, transport::Channel};

use crate::{
    cli::{DevArgs, Output},
    client::{self, authed, connect},
    demo_data as demo, ops, print,
};

/// Key id of the sandbox's signing key.
pub const DEV_KID: &str = "dev";
const PRIVATE_KEY_FILE: &str = "jwt-private.pem";
const PUBLIC_KEY_FILE: &str = "jwt-public.pem";
/// Validity of the printed tokens.
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long the demo waits for registration to follow the feeds.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(120);

const CST: UtcOffset = match UtcOffset::from_hms(8, 0, 0) {
    Ok(o) => o,
    Err(_) => UtcOffset::UTC,
};

/// The sandbox's Ed25519 key pair: created on first run, reused afterwards.
pub fn load_or_create_keys(dir: &Path) -> anyhow::Result<KeyPair> {
    let private = dir.join(PRIVATE_KEY_FILE);
    let public = dir.join(PUBLIC_KEY_FILE);
    if private.exists() && public.exists() {
        let private_pem = std::fs::read_to_string(&private)
            .with_context(|| format!("reading {} (读取私钥)", private.display()))?;
        let public_pem = std::fs::read_to_string(&public)
            .with_context(|| format!("reading {} (读取公钥)", public.display()))?;
        return Ok(KeyPair {
            kid: DEV_KID.into(),
            private_pem,
            public_pem,
        });
    }
    let kp = KeyPair::generate(DEV_KID)?;
    write_private(&private, &kp.private_pem)?;
    std::fs::write(&public, &kp.public_pem)
        .with_context(|| format!("writing {} (写入公钥)", public.display()))?;
    tracing::info!(dir = %dir.display(), "generated the sandbox JWT key pair (已生成沙箱密钥)");
    Ok(kp)
}

fn write_private(path: &Path, pem: &str) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("writing {} (写入私钥)", path.display()))?;
        f.write_all(pem.as_bytes())
            .with_context(|| format!("writing {} (写入私钥)", path.display()))?;
        Ok(())
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, pem).with_context(|| format!("writing {} (写入私钥)", path.display()))
    }
}

/// The address clients use to reach a listener bound to `local` (loopback for a wildcard bind).
fn reachable(local: SocketAddr) -> SocketAddr {
    match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), local.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), local.port())
        }
        _ => local,
    }
}

/// One ready-made token per role.
pub struct DevTokens {
    pub by_role: Vec<(Role, String, String)>,
}

impl DevTokens {
    fn mint(issuer: &TokenIssuer, developer: &str) -> anyhow::Result<Self> {
        let mut by_role = Vec::new();
        for role in Role::ALL {
            let (org, county, note) = match role {
                Role::Developer => (
                    Some(developer.to_owned()),
                    None,
                    format!("org {developer} {}", demo::DEVELOPER_NAME),
                ),
                Role::Clerk => (
                    None,
                    Some(demo::COUNTY_CODE.to_owned()),
                    format!("county {} {}", demo::COUNTY_CODE, demo::COUNTY_NAME),
                ),
                _ => (None, None, String::new()),
            };
            let token = issuer.issue(&TokenSpec {
                role,
                subject: format!("dev-{}", role.as_str().replace('_', "-")),
                org,
                county,
                ttl: TOKEN_TTL,
            })?;
            by_role.push((role, token, note));
        }
        Ok(DevTokens { by_role })
    }

    pub fn get(&self, role: Role) -> anyhow::Result<&str> {
        self.by_role
            .iter()
            .find(|(r, _, _)| *r == role)
            .map(|(_, t, _)| t.as_str())
            .ok_or_else(|| anyhow!("no sandbox token for {role}"))
    }
}

/// Runs the sandbox until Ctrl-C (or, with `--exit-after-demo`, until the demo is done).
pub async fn run(args: &DevArgs, output: Output) -> anyhow::Result<()> {
    init_tracing();
    if args.reset && args.data_dir.exists() {
        std::fs::remove_dir_all(&args.data_dir)
            .with_context(|| format!("deleting {} (清空数据目录)", args.data_dir.display()))?;
        eprintln!(
            "已清空数据目录 (data dir reset): {}",
            args.data_dir.display()
        );
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {} (创建数据目录)", args.data_dir.display()))?;
    let dir: PathBuf = args
        .data_dir
        .canonicalize()
        .with_context(|| format!("resolving {} (数据目录)", args.data_dir.display()))?;
    let keys = load_or_create_keys(&dir)?;

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (无法监听)", args.listen))?;
    let addr = reachable(listener.local_addr()?);
    let url = format!("http://{addr}");
    eprintln!("沙箱监听 sandbox listening on {addr}");

    let db_url = format!("sqlite://{}/tongjiao.db", dir.display());
    let db = Db::connect(&db_url, 1)
        .await
        .with_context(|| format!("opening {db_url} (打开数据库)"))?;
    let issuer =
        TokenIssuer::from_pem(&keys.private_pem, DEV_KID, DEFAULT_ISSUER, DEFAULT_AUDIENCE)?;
    let verifier = TokenVerifier::new(DEFAULT_ISSUER, DEFAULT_AUDIENCE)
        .with_public_pem(DEV_KID, &keys.public_pem)?;

    let survey = tongjiao_survey_data::build(db.clone())
        .await
        .context("starting survey-data (楼盘表服务)")?;
    let acceptance = tongjiao_acceptance::build(db.clone())
        .await
        .context("starting acceptance (验收备案服务)")?;
    let tax = tongjiao_tax_status::build(db.clone())
        .await
        .context("starting tax-status (完税服务)")?;
    let registration = Registration::build(
        db.clone(),
        Workflow::memory(),
        RegistrationConfig {
            survey_url: url.clone(),
            acceptance_url: url.clone(),
            tax_url: url.clone(),
            tokens: TokenSource::Signing(issuer.clone()),
            county_names: config::parse_county_names(demo::COUNTIES).map_err(|e| anyhow!(e))?,
            lapse_sweep_every: Duration::from_secs(60),
            // The sandbox's SQLite takes one writer: batches are applied whole whatever this says.
            parallel_apply_min_units: 256,
            clock: Clock::default(),
        },
    )
    .await
    .context("starting registration (登记服务)")?;

    let auth = Authenticator::new(verifier);
    let mut set = ServiceSet::new();
    survey.register(&mut set, auth.clone());
    acceptance.register(&mut set, auth.clone());
    tax.register(&mut set, auth.clone());
    registration.clone().register(&mut set, auth);

    // The server stops when told to; Ctrl-C is handled below, because graceful shutdown waits for
    // open streams and registration's own feed followers must be stopped first.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(serve(listener, set, async move {
        let _ = stop_rx.await;
    }));

    let ch = wait_until_serving(&url).await?;
    let background = registration.start_background();

    let work = async {
        let developer = demo::developer_credit_code()?;
        let tokens = DevTokens::mint(&issuer, &developer)?;
        seed(&ch, &tokens, &developer).await?;
        print_banner(output, addr, &dir, &developer, &tokens);
        if args.demo {
            run_demo(&ch, &tokens, &developer, output).await?;
        }
        anyhow::Ok(())
    };
    let outcome: anyhow::Result<()> = tokio::select! {
        r = work => match r {
            Ok(()) if args.exit_after_demo => Ok(()),
            Ok(()) => {
                eprintln!("沙箱运行中，按 Ctrl-C 停止 (sandbox running; press Ctrl-C to stop)");
                tokio::select! {
                    _ = shutdown_signal() => Ok(()),
                    r = &mut server => Err(server_ended(r)),
                }
            }
            Err(e) => Err(e),
        },
        _ = shutdown_signal() => Ok(()),
        r = &mut server => Err(server_ended(r)),
    };
    eprintln!("正在停止沙箱 (stopping the sandbox)");
    // Stop registration's followers (they hold streams to this very server), then the server.
    for t in &background {
        t.abort();
    }
    for t in background {
        let _ = t.await;
    }
    drop(ch);
    let _ = stop_tx.send(());
    if !server.is_finished() {
        match tokio::time::timeout(Duration::from_secs(5), &mut server).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "gRPC server stopped with an error"),
            Ok(_) => {}
            Err(_) => {
                tracing::warn!("open connections did not close within 5 s; stopping anyway");
                server.abort();
            }
        }
    }
    outcome
}

fn server_ended(
    r: Result<Result<(), Box<dyn std::error::Error + Send + Sync>>, tokio::task::JoinError>,
) -> anyhow::Error {
    match r {
        Ok(Ok(())) => anyhow!("the gRPC server stopped unexpectedly (服务意外停止)"),
        Ok(Err(e)) => anyhow!("gRPC server failed (服务失败): {e}"),
        Err(e) => anyhow!("gRPC server task failed: {e}"),
    }
}

/// Connects to the sandbox once it answers.
async fn wait_until_serving(url: &str) -> anyhow::Result<Channel> {
    let started = Instant::now();
    loop {
        match connect(url).await {
            Ok(ch) => return Ok(ch),
            Err(e) if started.elapsed() > Duration::from_secs(10) => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn step(n: u32, total: u32, what: &str) {
    eprintln!("[{n}/{total}] {what}");
}

/// True for a status meaning "done before": the object exists or the request id was used.
fn already_done(e: &tonic::Status) -> bool {
    e.code() == Code::AlreadyExists
}

/// Enrols the demo project and uploads its 楼盘表, through the public API. Fixed request ids make a
/// restart replay instead of duplicating.
async fn seed(ch: &Channel, tokens: &DevTokens, developer: &str) -> anyhow::Result<()> {
    step(1, 2, "纳入房证同交项目 enrolling project YQ-2026-001");
    match client::registration(ch)
        .enroll_project(authed(
            demo::enroll_request(developer),
            tokens.get(Role::Developer)?,
        )?)
        .await
    {
        Ok(_) => {}
        Err(e) if already_done(&e) => {
            eprintln!("      项目已存在 (project already enrolled)");
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context("enrolling the demo project (纳入项目)"));
        }
    }
    step(2, 2, "上传楼盘表 uploading the building table");
    match client::survey(ch)
        .upload_building_table(authed(
            demo::building_table()?,
            tokens.get(Role::HousingBureau)?,
        )?)
        .await
    {
        Ok(r) => {
            let r = r.into_inner();
            eprintln!(
                "      楼盘表版本 version {} · {} 幢 buildings · {} 户 units",
                r.version, r.building_count, r.unit_count
            );
        }
        Err(e) if already_done(&e) => eprintln!("      楼盘表已上传 (already uploaded)"),
        Err(e) => {
            return Err(anyhow::Error::new(e).context("uploading the demo 楼盘表 (上传楼盘表)"));
        }
    }
    Ok(())
}

fn print_banner(output: Output, addr: SocketAddr, dir: &Path, developer: &str, tokens: &DevTokens) {
    let example_unit = demo::units()
        .ok()
        .and_then(|u| u.first().map(|u| u.code.clone()))
        .unwrap_or_default();
    if output == Output::Json {
        let toks: serde_json::Map<String, serde_json::Value> = tokens
            .by_role
            .iter()
            .map(|(r, t, _)| (r.as_str().to_owned(), json!(t)))
            .collect();
        println!(
            "{}",
            json!({
                "listen": addr.to_string(),
                "server": format!("http://{addr}"),
                "data_dir": dir.display().to_string(),
                "county": {"code": demo::COUNTY_CODE, "name": demo::COUNTY_NAME},
                "developer": {"credit_code": developer, "name": demo::DEVELOPER_NAME},
                "project_id": demo::PROJECT_ID,
                "tokens": toks,
            })
        );
        return;
    }
    println!("tongjiao 沙箱已就绪 (sandbox ready)");
    println!("  监听 listen:      {addr}");
    println!("  服务 server:      http://{addr}");
    println!("  数据 data dir:    {}", dir.display());
    println!(
        "  区县 county:      {} {}",
        demo::COUNTY_CODE,
        demo::COUNTY_NAME
    );
    println!("  开发企业 developer: {developer} {}", demo::DEVELOPER_NAME);
    println!(
        "  项目 project:     {} {} (宗地 parcel {}, {} 户 units)",
        demo::PROJECT_ID,
        demo::PROJECT_NAME,
        demo::PARCEL_CODE,
        demo::BUILDINGS * demo::FLOORS * demo::UNITS_PER_FLOOR
    );
    println!();
    println!("令牌 tokens (24 h):");
    for (role, token, note) in &tokens.by_role {
        let var = format!("TJ_TOKEN_{}", role.as_str().to_uppercase());
        if note.is_empty() {
            println!("# {} {}", role.as_str(), role.label_zh());
        } else {
            println!("# {} {} ({note})", role.as_str(), role.label_zh());
        }
        println!("export {var}='{token}'");
    }
    println!();
    println!("示例 examples:");
    println!(
        "grpcurl -plaintext -H \"authorization: Bearer $TJ_TOKEN_CLERK\" -d '{{\"unit_code\":\"{example_unit}\"}}' {addr} tongjiao.registration.v1.RegistrationService/FindCases"
    );
    println!(
        "TONGJIAO_SERVER=http://{addr} TONGJIAO_TOKEN=$TJ_TOKEN_CLERK tongjiao counter find --unit {example_unit}"
    );
    println!();
}

fn today_cst() -> time::Date {
    OffsetDateTime::now_utc().to_offset(CST).date()
}

fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The whole handover through the public API, printing every certificate.
async fn run_demo(
    ch: &Channel,
    tokens: &DevTokens,
    developer: &str,
    output: Output,
) -> anyhow::Result<()> {
    const STEPS: u32 = 7;
    let units = demo::units()?;
    let reg_api = || client::registration(ch);

    // 1. Acceptance filings.
    step(
        1,
        STEPS,
        "记录验收备案 recording acceptance filings (规划验收, 竣工验收备案, 权籍调查)",
    );
    let filings = [
        (
            FilingKind::PlanningAcceptance,
            "planning",
            "垣自然资规核字〔2025〕第0318号",
            "垣曲县自然资源局",
            "建设工程规划核实合格证",
        ),
        (
            FilingKind::CompletionFiling,
            "completion",
            "140827-JB-2025-0042",
            "垣曲县住房和城乡建设管理局",
            "竣工验收备案表",
        ),
        (
            FilingKind::CadastralSurvey,
            "cadastral",
            "垣不动产调〔2025〕第0107号",
            "垣曲县自然资源局",
            "不动产权籍调查成果报告",
        ),
    ];
    for (kind, key, number, authority, doc) in filings {
        let req = RecordFilingRequest {
            request_id: format!("dev-demo-filing-{key}-{}", demo::PROJECT_ID),
            project_id: demo::PROJECT_ID.into(),
            kind: kind as i32,
            document_number: number.into(),
            authority: authority.into(),
            completed_on: "2025-11-20".into(),
            documents: vec![Document {
                name: doc.into(),
                sha256: digest(format!("{doc} {} {number}", demo::PROJECT_ID).as_bytes()),
            }],
        };
        match client::acceptance(ch)
            .record_filing(authed(req, tokens.get(Role::HousingBureau)?)?)
            .await
        {
            Ok(_) => {}
            Err(e) if already_done(&e) => {}
            Err(e) => {
                return Err(
                    anyhow::Error::new(e).context(format!("recording filing {doc} (记录备案)"))
                );
            }
        }
    }

    // 2. Developer taxes cleared.
    step(
        2,
        STEPS,
        "推送开发企业税费结清 pushing developer tax cleared",
    );
    let dev_tax = vec![PushCompletionsRequest {
        event_id: format!("dev-demo-devtax-{}", demo::PROJECT_ID),
        occurred_at: None,
        payload: Some(Payload::DeveloperTaxCleared(DeveloperTaxCleared {
            project_id: demo::PROJECT_ID.into(),
            developer_credit_code: developer.into(),
            voucher_number: "垣税清〔2025〕0042号".into(),
        })),
    }];
    let s = ops::push_tax_events(
        ch,
        tokens.get(Role::TaxBureau)?,
        dev_tax,
        &indicatif::ProgressBar::hidden(),
    )
    .await?;
    if let Some((id, e)) = s.rejected.first() {
        bail!("developer tax event {id} rejected (拒收): {e}");
    }

    // 3. 首次登记.
    step(
        3,
        STEPS,
        "首次登记 first registration: waiting for the feeds, applying, completing",
    );
    first_registration(ch, tokens).await?;

    // 4. Handover batch.
    step(4, STEPS, "提交交房批次 submitting the handover batch");
    let batch_id = submit_batch(ch, tokens, &units).await?;

    // 5. 契税 + 维修资金.
    step(
        5,
        STEPS,
        "推送契税和维修资金 pushing deed tax and maintenance fund",
    );
    let mut events = Vec::new();
    for u in &units {
        let buyers = demo::buyers(u)?;
        for (j, b) in buyers.iter().enumerate() {
            events.push(PushCompletionsRequest {
                event_id: format!("dev-demo-deedtax-{}-{j}", u.code),
                occurred_at: None,
                payload: Some(Payload::DeedTaxPaid(DeedTaxPaid {
                    unit_code: u.code.clone(),
                    buyer_id: b.resident_id.clone(),
                    amount_fen: demo::deed_tax_fen(u, buyers.len()),
                    voucher_number: format!("314082725{:06}{j}", u.index + 1),
                    relieved: false,
                    relief_basis: String::new(),
                })),
            });
        }
        events.push(PushCompletionsRequest {
            event_id: format!("dev-demo-fund-{}", u.code),
            occurred_at: None,
            payload: Some(Payload::MaintenanceFundDeposited(
                MaintenanceFundDeposited {
                    unit_code: u.code.clone(),
                    amount_fen: demo::maintenance_fund_fen(u),
                    receipt_number: format!("YQWX2025{:05}", u.index + 1),
                },
            )),
        });
    }
    let pb = ops::bar(events.len() as u64, output == Output::Json, "完税推送 tax");
    let s = ops::push_tax_events(ch, tokens.get(Role::TaxBureau)?, events, &pb).await;
    pb.finish_and_clear();
    let s = s?;
    if let Some((id, e)) = s.rejected.first() {
        bail!("tax event {id} rejected (拒收): {e}");
    }
    eprintln!(
        "      已记录 accepted {} · 重复 duplicate {}",
        s.accepted, s.duplicate
    );

    // 6. Wait until every case is ready.
    step(6, STEPS, "等待办件可办理 waiting until every case is READY");
    let pb = ops::bar(units.len() as u64, output == Output::Json, "可办理 ready");
    let last = ops::watch_batch(
        ch,
        tokens.get(Role::Developer)?,
        &batch_id,
        Some(FOLLOW_TIMEOUT),
        |b| {
            let c = b.counts.unwrap_or_default();
            pb.set_length(u64::from(c.total));
            pb.set_position(u64::from(
                c.ready + c.transfer_registered + c.certificate_issued,
            ));
        },
        |b| {
            let c = b.counts.unwrap_or_default();
            c.pending == 0
        },
    )
    .await;
    pb.finish_and_clear();
    if let Some(b) = last? {
        eprintln!("      {}", print::batch_counts_line(&b));
    }

    // 7. The counter.
    step(
        7,
        STEPS,
        "窗口登簿发证 counter: transfer registration and certificates",
    );
    let clerk = tokens.get(Role::Clerk)?;
    let pb = ops::bar(units.len() as u64, output == Output::Json, "发证 issuing");
    let mut certs = Vec::new();
    let mut earlier = 0usize;
    for u in &units {
        let cases = reg_api()
            .find_cases(authed(
                reg::FindCasesRequest {
                    key: Some(Key::UnitCode(u.code.clone())),
                },
                clerk,
            )?)
            .await
            .with_context(|| format!("finding the case of unit {} (查询办件)", u.code))?
            .into_inner()
            .cases;
        let case = live_case(&cases)
            .ok_or_else(|| anyhow!("unit {} has no open case (该单元没有办件)", u.code))?;
        let issued = ops::issue_case(ch, clerk, case, "dev-demo").await?;
        if !issued.newly_issued {
            earlier += 1;
        }
        certs.push(issued.certificate);
        pb.inc(1);
    }
    pb.finish_and_clear();
    match output {
        Output::Json => println!(
            "{}",
            json!({"certificates": certs.iter().map(print::certificate_json).collect::<Vec<_>>()})
        ),
        Output::Table => {
            println!(
                "演示完成：不动产权证书 {} 本，其中 {earlier} 本为此前已发 (demo done: {} certificates, {earlier} issued earlier)",
                certs.len(),
                certs.len()
            );
            println!();
            for c in &certs {
                println!("{}", print::render_certificate(c));
            }
        }
    }
    Ok(())
}

/// The case of a unit the demo works on: the newest one that has not lapsed or been opted out.
fn live_case(cases: &[reg::Case]) -> Option<&reg::Case> {
    cases.iter().find(|c| {
        !matches!(
            reg::CaseState::try_from(c.state),
            Ok(reg::CaseState::Lapsed | reg::CaseState::OptedOut)
        )
    })
}

/// Waits until registration has followed the feeds far enough that nothing is missing for 首次登记,
/// then applies (developer) and completes (registrar) unless already done.
async fn first_registration(ch: &Channel, tokens: &DevTokens) -> anyhow::Result<()> {
    let started = Instant::now();
    let project = loop {
        let p = client::registration(ch)
            .get_project(authed(
                reg::GetProjectRequest {
                    project_id: demo::PROJECT_ID.into(),
                },
                tokens.get(Role::Developer)?,
            )?)
            .await
            .context("reading the demo project (查询项目)")?
            .into_inner()
            .project
            .ok_or_else(|| anyhow!("the reply has no project (应答缺少项目)"))?;
        let done = p.first_registration_status != reg::FirstRegistrationStatus::Unspecified as i32;
        if done || p.first_registration_missing.is_empty() {
            break p;
        }
        if started.elapsed() > FOLLOW_TIMEOUT {
            let missing: Vec<String> = p
                .first_registration_missing
                .iter()
                .map(print::missing_line)
                .collect();
            bail!(
                "first registration still lacks (首次登记仍缺): {}",
                missing.join("; ")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let status = reg::FirstRegistrationStatus::try_from(project.first_registration_status)
        .unwrap_or(reg::FirstRegistrationStatus::Unspecified);
    if status == reg::FirstRegistrationStatus::Unspecified {
        client::registration(ch)
            .apply_first_registration(authed(
                reg::ApplyFirstRegistrationRequest {
                    request_id: format!("dev-demo-apply-{}", demo::PROJECT_ID),
                    project_id: demo::PROJECT_ID.into(),
                },
                tokens.get(Role::Developer)?,
            )?)
            .await
            .context("applying for 首次登记 (申请首次登记)")?;
    }
    if status != reg::FirstRegistrationStatus::Completed {
        client::registration(ch)
            .complete_first_registration(authed(
                reg::CompleteFirstRegistrationRequest {
                    request_id: format!("dev-demo-complete-{}", demo::PROJECT_ID),
                    project_id: demo::PROJECT_ID.into(),
                },
                tokens.get(Role::Registrar)?,
            )?)
            .await
            .context("completing 首次登记 (首次登记登簿)")?;
    }
    eprintln!("      首次登记已登簿 (first registration completed)");
    Ok(())
}

/// Submits a batch for the units that have no live case yet; returns the batch the units are in.
async fn submit_batch(
    ch: &Channel,
    tokens: &DevTokens,
    units: &[demo::DemoUnit],
) -> anyhow::Result<String> {
    let clerk = tokens.get(Role::Clerk)?;
    let mut existing: HashMap<String, String> = HashMap::new();
    for u in units {
        let cases = client::registration(ch)
            .find_cases(authed(
                reg::FindCasesRequest {
                    key: Some(Key::UnitCode(u.code.clone())),
                },
                clerk,
            )?)
            .await
            .with_context(|| format!("finding cases of unit {} (查询办件)", u.code))?
            .into_inner()
            .cases;
        if let Some(c) = live_case(&cases) {
            existing.insert(u.code.clone(), c.batch_id.clone());
        }
    }
    let todo: Vec<&demo::DemoUnit> = units
        .iter()
        .filter(|u| !existing.contains_key(&u.code))
        .collect();
    if todo.is_empty() {
        eprintln!("      每户已有办件 (every unit already has a case)");
        return existing
            .values()
            .next()
            .cloned()
            .ok_or_else(|| anyhow!("no batch found (未找到批次)"));
    }
    if !existing.is_empty() {
        bail!(
            "{} unit(s) already have cases and {} do not; run `tongjiao dev --reset --demo` for a clean demo (部分单元已有办件)",
            existing.len(),
            todo.len()
        );
    }
    let today = today_cst();
    let handover = format_date(today + time::Duration::days(5));
    let deadline = format_date(today + time::Duration::days(3));
    let cases = todo
        .iter()
        .map(|u| demo::case_submission(u))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let req = reg::SubmitHandoverBatchRequest {
        request_id: format!("dev-demo-batch-{}-{handover}", demo::PROJECT_ID),
        project_id: demo::PROJECT_ID.into(),
        handover_date: handover,
        material_deadline: deadline,
        cases,
    };
    let batch = client::registration(ch)
        .submit_handover_batch(authed(req, tokens.get(Role::Developer)?)?)
        .await
        .context("submitting the demo batch (提交交房批次)")?
        .into_inner()
        .batch
        .ok_or_else(|| anyhow!("the reply has no batch (应答缺少批次)"))?;
    eprintln!(
        "      批次 batch {} · 交房 handover {} · 截止 deadline {}",
        batch.batch_id, batch.handover_date, batch.material_deadline
    );
    Ok(batch.batch_id)
}
