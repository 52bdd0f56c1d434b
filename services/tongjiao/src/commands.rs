//! The client subcommands: counter, batch, tax, survey, token.
use std::path::Path;

use anyhow::{Context, anyhow, bail};
use serde_json::json;
use tongjiao_proto::registration::{self as reg, find_cases_request::Key};

use crate::{
    cli::{BatchCmd, Cli, CounterCmd, Output, SurveyCmd, TaxCmd, TokenCmd, TokenIssueArgs},
    client::{self, authed, connect, require_token},
    error::usage,
    files, ops, print,
    token::{TokenRequest, issue_with_key_file},
};

fn read_file(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {} (无法读取文件)", path.display()))
}

fn print_json(v: &serde_json::Value) {
    println!("{v}");
}

pub async fn counter(cli: &Cli, cmd: &CounterCmd) -> anyhow::Result<()> {
    let token = require_token(cli.token.as_deref())?;
    let ch = connect(&cli.server).await?;
    let mut api = client::registration(&ch);
    match cmd {
        CounterCmd::Find(args) => {
            let key = match (&args.unit, &args.buyer) {
                (Some(u), None) => Key::UnitCode(u.trim().to_owned()),
                (None, Some(b)) => Key::BuyerId(b.trim().to_owned()),
                _ => {
                    return Err(usage(
                        "give exactly one of --unit or --buyer (请指定 --unit 或 --buyer)",
                    ));
                }
            };
            let cases = api
                .find_cases(authed(reg::FindCasesRequest { key: Some(key) }, token)?)
                .await
                .context("finding cases (查询办件)")?
                .into_inner()
                .cases;
            match cli.output {
                Output::Json => print_json(&json!({
                    "cases": cases.iter().map(print::case_json).collect::<Vec<_>>()
                })),
                Output::Table => {
                    if cases.is_empty() {
                        eprintln!("没有办件 (no cases found)");
                    } else {
                        println!("{}", print::cases_table(&cases));
                    }
                }
            }
        }
        CounterCmd::Show { case_id } => {
            let case = get_case(&ch, token, case_id).await?;
            match cli.output {
                Output::Json => print_json(&print::case_json(&case)),
                Output::Table => print!("{}", print::render_case(&case)),
            }
        }
        CounterCmd::Issue { case_id } => {
            let case = get_case(&ch, token, case_id).await?;
            let issued = ops::issue_case(&ch, token, &case, "counter").await?;
            if !issued.newly_issued {
                eprintln!(
                    "该办件已发证，以下为原证书 (already issued; showing the existing certificate)"
                );
            }
            print_certificate(cli.output, &issued.certificate);
        }
        CounterCmd::Print { cert_no } => {
            let cert = api
                .get_certificate(authed(
                    reg::GetCertificateRequest {
                        certificate_number: cert_no.trim().to_owned(),
                    },
                    token,
                )?)
                .await
                .with_context(|| format!("looking up certificate {cert_no} (查询证书)"))?
                .into_inner()
                .certificate
                .ok_or_else(|| anyhow!("the reply has no certificate (应答缺少证书)"))?;
            print_certificate(cli.output, &cert);
        }
    }
    Ok(())
}

pub fn print_certificate(output: Output, cert: &reg::Certificate) {
    match output {
        Output::Json => print_json(&print::certificate_json(cert)),
        Output::Table => print!("{}", print::render_certificate(cert)),
    }
}

async fn get_case(
    ch: &tonic::transport::Channel,
    token: &str,
    case_id: &str,
) -> anyhow::Result<reg::Case> {
    client::registration(ch)
        .get_case(authed(
            reg::GetCaseRequest {
                case_id: case_id.trim().to_owned(),
            },
            token,
        )?)
        .await
        .with_context(|| format!("reading case {case_id} (查询办件)"))?
        .into_inner()
        .case
        .ok_or_else(|| anyhow!("the reply has no case (应答缺少办件)"))
}

pub async fn batch(cli: &Cli, cmd: &BatchCmd) -> anyhow::Result<()> {
    let BatchCmd::Submit {
        file,
        watch,
        request_id,
    } = cmd;
    let text = read_file(file)?;
    let req = files::parse_batch(&text, request_id.as_deref())
        .map_err(|e| anyhow!("{}: {e}", file.display()))?;
    let token = require_token(cli.token.as_deref())?;
    let ch = connect(&cli.server).await?;
    let json_out = cli.output == Output::Json;
    let spin = ops::spinner(json_out, "提交交房批次 submitting batch…");
    let cases = req.cases.len();
    let request_id = req.request_id.clone();
    let reply = client::registration(&ch)
        .submit_handover_batch(authed(req, token)?)
        .await;
    spin.finish_and_clear();
    let batch = reply
        .with_context(|| format!("submitting the batch of {cases} case(s) (提交交房批次)"))?
        .into_inner()
        .batch
        .ok_or_else(|| anyhow!("the reply has no batch (应答缺少批次)"))?;
    eprintln!("请求编号 request id: {request_id}");
    match cli.output {
        Output::Json => print_json(&print::batch_json(&batch)),
        Output::Table => print!("{}", print::render_batch(&batch)),
    }
    if *watch {
        let (done, total) = print::batch_progress(&batch);
        let pb = ops::bar(total, json_out, "办件进度 cases");
        pb.set_position(done);
        let last = ops::watch_batch(
            &ch,
            token,
            &batch.batch_id,
            None,
            |b| {
                let (done, total) = print::batch_progress(b);
                pb.set_length(total);
                pb.set_position(done);
                pb.set_message(print::batch_counts_line(b));
            },
            |_| false,
        )
        .await;
        pb.finish_and_clear();
        let last = last?;
        if let Some(b) = last {
            match cli.output {
                Output::Json => print_json(&print::batch_json(&b)),
                Output::Table => println!("最终 final: {}", print::batch_counts_line(&b)),
            }
        }
    }
    Ok(())
}

pub async fn tax(cli: &Cli, cmd: &TaxCmd) -> anyhow::Result<()> {
    let TaxCmd::Push { file } = cmd;
    let text = read_file(file)?;
    let events = files::parse_tax_events(&text).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    if events.is_empty() {
        return Err(usage(format!(
            "{}: no events in the file (文件中没有事件)",
            file.display()
        )));
    }
    let token = require_token(cli.token.as_deref())?;
    let ch = connect(&cli.server).await?;
    let json_out = cli.output == Output::Json;
    let total = events.len();
    let pb = ops::bar(total as u64, json_out, "完税推送 pushing");
    let summary = ops::push_tax_events(&ch, token, events, &pb).await;
    pb.finish_and_clear();
    let s = summary?;
    match cli.output {
        Output::Json => print_json(&json!({
            "total": total,
            "accepted": s.accepted,
            "duplicate": s.duplicate,
            "rejected": s.rejected.len(),
            "rejections": s.rejected.iter().map(|(id, e)| json!({"event_id": id, "error": e})).collect::<Vec<_>>(),
        })),
        Output::Table => {
            println!(
                "共 total {total} · 已记录 accepted {} · 重复 duplicate {} · 拒收 rejected {}",
                s.accepted,
                s.duplicate,
                s.rejected.len()
            );
            for (id, e) in &s.rejected {
                println!("拒收 rejected {id}: {e}");
            }
        }
    }
    if !s.rejected.is_empty() {
        bail!(
            "{} event(s) rejected ({}条事件被拒收)",
            s.rejected.len(),
            s.rejected.len()
        );
    }
    Ok(())
}

pub async fn survey(cli: &Cli, cmd: &SurveyCmd) -> anyhow::Result<()> {
    let SurveyCmd::Upload {
        file,
        project,
        parcel,
        request_id,
    } = cmd;
    let text = read_file(file)?;
    let req = if files::looks_like_csv(file, &text) {
        let project = project.as_deref().ok_or_else(|| {
            usage("--project is required for a CSV 楼盘表 (CSV格式须用 --project 指定项目编号)")
        })?;
        files::parse_survey_csv(&text, project, parcel.as_deref(), request_id.as_deref())
    } else {
        files::parse_survey_json(
            &text,
            project.as_deref(),
            parcel.as_deref(),
            request_id.as_deref(),
        )
    }
    .map_err(|e| anyhow!("{}: {e}", file.display()))?;
    let token = require_token(cli.token.as_deref())?;
    let ch = connect(&cli.server).await?;
    let units: usize = req.buildings.iter().map(|b| b.units.len()).sum();
    let spin = ops::spinner(
        cli.output == Output::Json,
        &format!(
            "上传楼盘表 uploading {} building(s), {units} unit(s)…",
            req.buildings.len()
        ),
    );
    let rid = req.request_id.clone();
    let reply = client::survey(&ch)
        .upload_building_table(authed(req, token)?)
        .await;
    spin.finish_and_clear();
    let r = reply
        .context("uploading the 楼盘表 (上传楼盘表)")?
        .into_inner();
    match cli.output {
        Output::Json => print_json(&json!({
            "project_id": r.project_id,
            "version": r.version,
            "unit_count": r.unit_count,
            "building_count": r.building_count,
            "request_id": rid,
        })),
        Output::Table => println!(
            "项目 project {} · 版本 version {} · 幢数 buildings {} · 户数 units {} (请求编号 request id {rid})",
            r.project_id, r.version, r.building_count, r.unit_count
        ),
    }
    Ok(())
}

pub fn token(cli: &Cli, cmd: &TokenCmd) -> anyhow::Result<()> {
    let TokenCmd::Issue(a) = cmd;
    let token = issue_with_key_file(&a.key, &token_request(a))?;
    match cli.output {
        Output::Json => print_json(&json!({ "token": token })),
        Output::Table => println!("{token}"),
    }
    Ok(())
}

fn token_request(a: &TokenIssueArgs) -> TokenRequest {
    TokenRequest {
        role: a.role,
        subject: a.subject.clone(),
        org: a.org.clone(),
        county: a.county.clone(),
        ttl_hours: a.ttl_hours,
        kid: a.kid.clone(),
        issuer: a.issuer.clone(),
        audience: a.audience.clone(),
    }
}
