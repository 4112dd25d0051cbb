//! The `iii` binary: command line, logging, boot, and a clean stop on Ctrl-C / SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use iii::config;
use iii::engine::Engine;

const HELP: &str = "\
iii — an actor-model iii engine

Usage: iii [--config <file>] [--ready-file <file>]

Options:
  -c, --config <file>      configuration file to start from (default: ./iii-config.yaml)
      --ready-file <file>  once every listener is bound, write their addresses there as JSON
                           (useful with port 0: {\"listeners\":[{\"url\",\"port\",\"rbac\"}],…})
  -h, --help               show this help
  -V, --version            show the version

Logging: RUST_LOG (e.g. RUST_LOG=debug, RUST_LOG=iii=debug); default: info.
Stop with Ctrl-C or SIGTERM: connections are closed, data is flushed, child processes stopped.
";

/// Engine events at info; the HTTP server's own start-up chatter only when something is wrong.
const DEFAULT_LOG: &str = "info,actix_server=warn";

struct Args {
    config: PathBuf,
    ready_file: Option<PathBuf>,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        config: PathBuf::from("iii-config.yaml"),
        ready_file: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "-h" | "--help" => {
                print!("{HELP}");
                return Ok(None);
            }
            "-V" | "--version" => {
                println!("iii {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            "-c" | "--config" => args.config = PathBuf::from(value(&a)?),
            "--ready-file" => args.ready_file = Some(PathBuf::from(value(&a)?)),
            other => {
                if let Some(v) = other.strip_prefix("--config=") {
                    args.config = PathBuf::from(v);
                } else if let Some(v) = other.strip_prefix("--ready-file=") {
                    args.ready_file = Some(PathBuf::from(v));
                } else {
                    return Err(format!("unknown argument {other:?} (see --help)"));
                }
            }
        }
    }
    Ok(Some(args))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iii: {e}");
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(DEFAULT_LOG)).init();
    stop_on_panic();
    let cfg = match config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            log::error!("invalid configuration: {e}");
            eprintln!("iii: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let system = actix::System::new();
    system.block_on(run(cfg, args.ready_file))
}

async fn run(cfg: config::EngineConfig, ready_file: Option<PathBuf>) -> ExitCode {
    let engine = match Engine::start(cfg).await {
        Ok(e) => e,
        Err(e) => {
            log::error!("cannot start: {e}");
            eprintln!("iii: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(path) = ready_file {
        if let Err(e) = write_ready_file(&path, &engine) {
            log::error!("cannot write the ready file {}: {e}", path.display());
        }
    }
    log::info!("engine ready (pid {})", std::process::id());
    let reason = wait_for_stop_signal().await;
    log::info!("{reason}: stopping");
    engine.stop().await;
    ExitCode::SUCCESS
}

/// A panic on any engine thread stops the whole engine with a clear message and exit status
/// 70: an engine whose registry or store thread died would otherwise accept sockets and answer
/// nothing. Acknowledged writes are already in the store's log, so exiting loses none.
fn stop_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        let thread = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string();
        log::error!(
            "internal error on thread {thread}: {info}; stopping the engine (exit status 70)"
        );
        eprintln!(
            "iii: internal error on thread {thread}; the engine stops rather than run without it"
        );
        std::process::exit(70);
    }));
}

fn write_ready_file(path: &std::path::Path, engine: &Engine) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, engine.ready_info().to_string())?;
    std::fs::rename(&tmp, path)
}

async fn wait_for_stop_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("cannot watch SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return "interrupted";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupted (SIGINT)",
        _ = term.recv() => "terminated (SIGTERM)",
    }
}
