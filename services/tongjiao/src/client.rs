//! Connecting to a tongjiao server and attaching the bearer token.
use std::time::Duration;

use anyhow::Context;
use tongjiao_proto::{
    acceptance::acceptance_service_client::AcceptanceServiceClient,
    registration::registration_service_client::RegistrationServiceClient,
    survey::survey_data_service_client::SurveyDataServiceClient,
    tax::tax_status_service_client::TaxStatusServiceClient,
};
use tonic::{
    Request,
    metadata::MetadataValue,
    transport::{Channel, Endpoint},
};

use crate::error::usage;

/// Largest message accepted or sent (a whole 楼盘表 in one upload).
pub const MAX_MESSAGE: usize = 64 << 20;

/// Opens a channel to `server` (e.g. `http://127.0.0.1:50050`).
pub async fn connect(server: &str) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(server.to_owned())
        .map_err(|e| {
            usage(format!(
                "invalid --server URL {server:?} (服务地址无效): {e}"
            ))
        })?
        .connect_timeout(Duration::from_secs(5));
    endpoint
        .connect()
        .await
        .with_context(|| format!("cannot connect to {server} (无法连接服务器)"))
}

/// The token given with --token / TONGJIAO_TOKEN, or a usage error.
pub fn require_token(token: Option<&str>) -> anyhow::Result<&str> {
    match token.map(str::trim) {
        Some(t) if !t.is_empty() => Ok(t),
        _ => Err(usage(
            "a token is required: pass --token or set TONGJIAO_TOKEN (缺少令牌，见 `tongjiao dev` 或 `tongjiao token issue`)",
        )),
    }
}

/// A request carrying `authorization: Bearer <token>`.
pub fn authed<T>(msg: T, token: &str) -> anyhow::Result<Request<T>> {
    let mut req = Request::new(msg);
    let value: MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .map_err(|_| usage("token contains characters not allowed in a header (令牌含非法字符)"))?;
    req.metadata_mut().insert("authorization", value);
    Ok(req)
}

pub fn registration(ch: &Channel) -> RegistrationServiceClient<Channel> {
    RegistrationServiceClient::new(ch.clone())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

pub fn survey(ch: &Channel) -> SurveyDataServiceClient<Channel> {
    SurveyDataServiceClient::new(ch.clone())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

pub fn acceptance(ch: &Channel) -> AcceptanceServiceClient<Channel> {
    AcceptanceServiceClient::new(ch.clone())
}

pub fn tax(ch: &Channel) -> TaxStatusServiceClient<Channel> {
    TaxStatusServiceClient::new(ch.clone())
}
