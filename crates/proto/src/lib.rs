//! The tongjiao contracts (同交接口): generated messages, clients and servers for the four services.

/// 楼盘表 (building/unit table) service.
pub mod survey {
    tonic::include_proto!("tongjiao.survey.v1");
}

/// 验收备案 (acceptance filings) service.
pub mod acceptance {
    tonic::include_proto!("tongjiao.acceptance.v1");
}

/// 完税 (tax completion) service.
pub mod tax {
    tonic::include_proto!("tongjiao.tax.v1");
}

/// 不动产登记 (registration) service.
pub mod registration {
    tonic::include_proto!("tongjiao.registration.v1");
}

/// Encoded file descriptor set of every tongjiao proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tongjiao_descriptor");

pub use prost_types::Timestamp;
