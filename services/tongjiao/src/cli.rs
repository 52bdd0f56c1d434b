//! Command-line arguments.
use std::{net::SocketAddr, path::PathBuf};

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use tongjiao_auth::{DEFAULT_AUDIENCE, DEFAULT_ISSUER, Role};

/// 房证同交 (certificate on handover day) command line: the local sandbox, the counter client,
/// batch / tax / 楼盘表 file tools and tokens.
#[derive(Debug, Parser)]
#[command(name = "tongjiao", version, max_term_width = 100)]
pub struct Cli {
    /// Server URL (服务地址).
    #[arg(
        long,
        global = true,
        env = "TONGJIAO_SERVER",
        default_value = "http://127.0.0.1:50050"
    )]
    pub server: String,
    /// Bearer token (身份令牌); `tongjiao dev` prints one per role.
    #[arg(long, global = true, env = "TONGJIAO_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Output format for data on stdout (输出格式).
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Text and tables for people (表格).
    Table,
    /// JSON with stable keys, no progress bars (JSON).
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sandbox: all four services on one port with an embedded store (本地沙箱).
    Dev(DevArgs),
    /// Counter (窗口) work: find cases, show what is missing, register and issue, print certificates.
    #[command(subcommand)]
    Counter(CounterCmd),
    /// Handover batches (交房批次).
    #[command(subcommand)]
    Batch(BatchCmd),
    /// Tax completion feed (完税推送).
    #[command(subcommand)]
    Tax(TaxCmd),
    /// 楼盘表 (building table) uploads.
    #[command(subcommand)]
    Survey(SurveyCmd),
    /// Tokens (令牌).
    #[command(subcommand)]
    Token(TokenCmd),
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Address to listen on; port 0 picks a free port (监听地址).
    #[arg(long, default_value = "127.0.0.1:50050")]
    pub listen: SocketAddr,
    /// Where the SQLite files and the JWT key pair live (数据目录).
    #[arg(long, default_value = ".tongjiao-dev")]
    pub data_dir: PathBuf,
    /// After seeding, run a whole handover and print the certificates (演示完整交房).
    #[arg(long)]
    pub demo: bool,
    /// Stop once the demo is done instead of serving (演示后退出).
    #[arg(long, requires = "demo")]
    pub exit_after_demo: bool,
    /// Delete the data directory first (清空数据).
    #[arg(long)]
    pub reset: bool,
}

#[derive(Debug, Subcommand)]
pub enum CounterCmd {
    /// Find cases by unit code or buyer id (窗口查询).
    Find(FindArgs),
    /// One case with its state and the precise missing list (办件详情).
    Show {
        /// 办件编号 (case id).
        case_id: String,
    },
    /// Record the 转移登记 of a ready case and issue its certificate (登簿发证).
    Issue {
        /// 办件编号 (case id).
        case_id: String,
    },
    /// Print a certificate (打印证书).
    Print {
        /// 证号, e.g. 晋（2026）垣曲县不动产权第0000001号.
        cert_no: String,
    },
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("key").required(true).args(["unit", "buyer"])))]
pub struct FindArgs {
    /// 不动产单元代码 (unit code).
    #[arg(long)]
    pub unit: Option<String>,
    /// 居民身份证号 (buyer's resident id).
    #[arg(long)]
    pub buyer: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum BatchCmd {
    /// Submit a handover batch from a JSON file (提交交房批次).
    Submit {
        /// Batch JSON file.
        file: PathBuf,
        /// Follow the batch's progress until every case is final (跟踪进度).
        #[arg(long)]
        watch: bool,
        /// Request id; default: a hash of the file, so re-running is idempotent (请求编号).
        #[arg(long)]
        request_id: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TaxCmd {
    /// Push a JSON array of completion events (推送完税事件).
    Push {
        /// Events JSON file.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum SurveyCmd {
    /// Upload a 楼盘表 from JSON or CSV (上传楼盘表).
    Upload {
        /// JSON (UploadBuildingTableRequest shape) or CSV file.
        file: PathBuf,
        /// 项目编号 (project id); required for CSV, overrides the JSON file's.
        #[arg(long)]
        project: Option<String>,
        /// 宗地代码 (parcel code); for CSV defaults to the first unit code's first 19 characters.
        #[arg(long)]
        parcel: Option<String>,
        /// Request id; default: a hash of the file (请求编号).
        #[arg(long)]
        request_id: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Sign a token (签发令牌).
    Issue(TokenIssueArgs),
}

#[derive(Debug, Args)]
pub struct TokenIssueArgs {
    /// developer, housing_bureau, tax_bureau, clerk, registrar or auditor (角色).
    #[arg(long, value_parser = parse_role)]
    pub role: Role,
    /// Who the token is for (主体).
    #[arg(long)]
    pub subject: String,
    /// The developer's 统一社会信用代码 (developer tokens).
    #[arg(long)]
    pub org: Option<String>,
    /// 6-digit county code (clerk and registrar tokens).
    #[arg(long)]
    pub county: Option<String>,
    /// Validity in hours (有效期).
    #[arg(long, default_value_t = 24)]
    pub ttl_hours: u64,
    /// Ed25519 private key, PEM (签名私钥).
    #[arg(long, default_value = ".tongjiao-dev/jwt-private.pem")]
    pub key: PathBuf,
    /// Key id (`kid`).
    #[arg(long, default_value = "dev")]
    pub kid: String,
    /// Issuer (`iss`).
    #[arg(long, default_value = DEFAULT_ISSUER)]
    pub issuer: String,
    /// Audience (`aud`).
    #[arg(long, default_value = DEFAULT_AUDIENCE)]
    pub audience: String,
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse::<Role>().map_err(|e| {
        let all: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
        format!("{e}; one of: {}", all.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn find_needs_exactly_one_key() {
        assert!(Cli::try_parse_from(["tongjiao", "counter", "find"]).is_err());
        assert!(
            Cli::try_parse_from(["tongjiao", "counter", "find", "--unit", "a", "--buyer", "b"])
                .is_err()
        );
        assert!(Cli::try_parse_from(["tongjiao", "counter", "find", "--unit", "a"]).is_ok());
    }

    #[test]
    fn global_flags_and_usage_errors() {
        let c = Cli::try_parse_from([
            "tongjiao", "counter", "show", "x", "-o", "json", "--token", "t",
        ])
        .unwrap();
        assert_eq!(c.output, Output::Json);
        assert_eq!(c.token.as_deref(), Some("t"));
        let e = Cli::try_parse_from([
            "tongjiao",
            "token",
            "issue",
            "--role",
            "admin",
            "--subject",
            "s",
        ])
        .unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e = Cli::try_parse_from(["tongjiao", "dev", "--exit-after-demo"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }
}
