//! The `tongjiao` binary: parses the command line (usage errors exit 2), runs it, and reports
//! failures on stderr with exit code 1 (or 2 for usage mistakes found later).
use clap::Parser;
use tongjiao_cli::{cli::Cli, error};

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("错误 error: cannot start the async runtime (无法启动运行时): {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(tongjiao_cli::run(cli));
    // Background tasks (feed followers) must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    if let Err(e) = result {
        eprintln!("{}", error::describe(&e));
        std::process::exit(error::exit_code(&e));
    }
}
