//! Operations shared by the subcommands and the sandbox demo: streaming tax events, following a
//! batch, issuing a case's certificate at the counter.
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use tongjiao_proto::{
    registration::{self as reg},
    tax::{AckStatus, PushCompletionsRequest},
};
use tonic::transport::Channel;

use crate::client::{self, authed};

/// A progress bar on stderr (hidden when stderr is not a terminal, or when `hidden`).
pub fn bar(len: u64, hidden: bool, what: &str) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    let style =
        ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb.set_prefix(what.to_owned());
    pb
}

/// A spinner on stderr (hidden when stderr is not a terminal, or when `hidden`).
pub fn spinner(hidden: bool, what: &str) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    pb.set_message(what.to_owned());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// Outcome of pushing a set of tax events.
#[derive(Debug, Default, Clone)]
pub struct PushSummary {
    pub accepted: u64,
    pub duplicate: u64,
    pub rejected: Vec<(String, String)>,
}

/// Streams `events` over PushCompletions and collects every acknowledgement.
pub async fn push_tax_events(
    ch: &Channel,
    token: &str,
    events: Vec<PushCompletionsRequest>,
    progress: &ProgressBar,
) -> anyhow::Result<PushSummary> {
    let total = events.len();
    let mut acks = client::tax(ch)
        .push_completions(authed(tokio_stream::iter(events), token)?)
        .await
        .context("opening the completion feed (打开完税推送)")?
        .into_inner();
    let mut summary = PushSummary::default();
    let mut seen = 0usize;
    while let Some(ack) = acks.next().await {
        let ack = ack.context("completion feed interrupted (完税推送中断)")?;
        seen += 1;
        match AckStatus::try_from(ack.status) {
            Ok(AckStatus::Accepted) => summary.accepted += 1,
            Ok(AckStatus::Duplicate) => summary.duplicate += 1,
            _ => summary.rejected.push((ack.event_id, ack.error)),
        }
        progress.inc(1);
    }
    if seen < total {
        bail!(
            "the server acknowledged {seen} of {total} events (仅确认{seen}/{total}条); push the file again"
        );
    }
    Ok(summary)
}

/// Follows WatchHandoverBatch, calling `on_update` with each snapshot, until `done` says so or the
/// stream ends. Returns the last snapshot.
pub async fn watch_batch(
    ch: &Channel,
    token: &str,
    batch_id: &str,
    timeout: Option<Duration>,
    mut on_update: impl FnMut(&reg::HandoverBatch),
    done: impl Fn(&reg::HandoverBatch) -> bool,
) -> anyhow::Result<Option<reg::HandoverBatch>> {
    let mut stream = client::registration(ch)
        .watch_handover_batch(authed(
            reg::WatchHandoverBatchRequest {
                batch_id: batch_id.to_owned(),
            },
            token,
        )?)
        .await
        .with_context(|| format!("watching batch {batch_id} (订阅批次进度)"))?
        .into_inner();
    let mut last = None;
    let follow = async {
        while let Some(msg) = stream.next().await {
            let msg = msg.context("batch progress stream interrupted (批次进度中断)")?;
            if let Some(b) = msg.batch {
                on_update(&b);
                let finished = done(&b);
                last = Some(b);
                if finished {
                    break;
                }
            }
        }
        anyhow::Ok(())
    };
    match timeout {
        Some(t) => tokio::time::timeout(t, follow).await.map_err(|_| {
            anyhow!(
                "batch {batch_id} did not get there within {} s (批次进度等待超时)",
                t.as_secs()
            )
        })??,
        None => follow.await?,
    }
    Ok(last)
}

/// What `issue_case` did.
pub struct Issued {
    pub certificate: reg::Certificate,
    /// False when the certificate existed already and was only looked up.
    pub newly_issued: bool,
}

/// At the counter: records the 转移登记 of a READY case and issues its certificate in one call
/// (RegisterTransferAndIssue); a case already registered is only issued, one already issued returns
/// its certificate. Request ids derive from
/// the case id and `prefix`, so running it again replays instead of doing it twice.
pub async fn issue_case(
    ch: &Channel,
    token: &str,
    case: &reg::Case,
    prefix: &str,
) -> anyhow::Result<Issued> {
    let mut api = client::registration(ch);
    let state = reg::CaseState::try_from(case.state).unwrap_or(reg::CaseState::Unspecified);
    match state {
        reg::CaseState::CertificateIssued => {
            let cert = api
                .get_certificate(authed(
                    reg::GetCertificateRequest {
                        certificate_number: case.certificate_number.clone(),
                    },
                    token,
                )?)
                .await
                .with_context(|| {
                    format!(
                        "looking up certificate {} (查询证书)",
                        case.certificate_number
                    )
                })?
                .into_inner()
                .certificate
                .ok_or_else(|| anyhow!("the reply has no certificate (应答缺少证书)"))?;
            return Ok(Issued {
                certificate: cert,
                newly_issued: false,
            });
        }
        reg::CaseState::Ready | reg::CaseState::TransferRegistered => {}
        _ => {
            let missing: Vec<String> = case
                .missing
                .iter()
                .map(crate::print::missing_line)
                .collect();
            bail!(
                "case {} is {} and cannot be issued (办件不能发证){}",
                case.case_id,
                crate::print::case_state_label(case.state),
                if missing.is_empty() {
                    String::new()
                } else {
                    format!("; missing (尚缺): {}", missing.join("; "))
                }
            );
        }
    }
    // One call records the 转移登记 of a READY case and issues the certificate (a case whose
    // transfer is recorded already is only issued).
    let cert = api
        .register_transfer_and_issue(authed(
            reg::RegisterTransferAndIssueRequest {
                request_id: format!("{prefix}-handover-{}", case.case_id),
                case_id: case.case_id.clone(),
            },
            token,
        )?)
        .await
        .with_context(|| {
            format!(
                "transfer registration and certificate of case {} (转移登记并发证)",
                case.case_id
            )
        })?
        .into_inner()
        .certificate
        .ok_or_else(|| anyhow!("the reply has no certificate (应答缺少证书)"))?;
    Ok(Issued {
        certificate: cert,
        newly_issued: true,
    })
}
