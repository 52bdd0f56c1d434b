use std::future::Future;

use tokio::net::TcpListener;
use tonic::{
    service::RoutesBuilder,
    transport::{Server, server::TcpIncoming},
};
use tonic_health::ServingStatus;

/// The gRPC services one server hosts. A production binary hosts one; the sandbox hosts all four.
#[derive(Default)]
pub struct ServiceSet {
    pub routes: RoutesBuilder,
    names: Vec<&'static str>,
}

impl ServiceSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a service's full name so health reports it as serving.
    pub fn named(&mut self, name: &'static str) -> &mut RoutesBuilder {
        self.names.push(name);
        &mut self.routes
    }
}

/// Serves `set` on `listener` with grpc.health.v1 and server reflection until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    mut set: ServiceSet,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (reporter, health) = tonic_health::server::health_reporter();
    for name in &set.names {
        reporter
            .set_service_status(*name, ServingStatus::Serving)
            .await;
    }
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tongjiao_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tongjiao_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    set.routes
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let local = listener.local_addr()?;
    tracing::info!(%local, services = ?set.names, "serving gRPC");
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .trace_fn(|req: &http::Request<()>| tracing::info_span!("grpc", path = %req.uri().path()))
        .add_routes(set.routes.routes())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}
