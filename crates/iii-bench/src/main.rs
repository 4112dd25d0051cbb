//! `iii-bench`: load scenarios for the iii engine, on our Rust worker client.
//!
//! This file owns the command line (subcommands, `--help`) and runs each scenario on an actix
//! system. Every scenario prints one JSON line of results on stdout, then a readable table.
//!
//! | file | owns |
//! |---|---|
//! | `invoke.rs` | caller → engine → callee latency/throughput, and the `--direct` baseline |
//! | `relay.rs` | the `relay` subcommand: the minimal WebSocket forwarder `--direct` measures |
//! | `fanout.rs` | `stream::set` fan-out to S `stream`-trigger subscribers, loss/duplicate check |
//! | `connections.rs` | C idle connections: connect time, engine RSS per connection |
//! | `startup.rs` | spawn → first accepted connection |
//! | `flood.rs` | engine RSS and a well-behaved caller's latency under one flood at a time |
//! | `floods.rs` | `flood`'s raw-socket flooders and what they sent and got back |
//! | `store.rs` | `stream::set` throughput/latency per fsync mode (the `store` scenario) |
//! | `compaction.rs` | `store`'s compaction check: `stream::get` latency while the store compacts |
//! | `target.rs` | spawned engine vs `--url`, client options, clients and tasks on other threads |
//! | `procs.rs` | child processes, scratch dirs, `/proc` readings, the open-file limit |
//! | `rawws.rs` | the lean idle WebSocket worker |
//! | `report.rs` | machine info, percentiles, JSON line + tables |
//! | `args.rs` | option parsing, sizes, lists |

mod args;
mod compaction;
mod connections;
mod fanout;
mod flood;
mod floods;
mod invoke;
mod procs;
mod rawws;
mod relay;
mod report;
mod startup;
mod store;
mod target;

use std::process::ExitCode;

use args::Args;

const HELP: &str = "\
iii-bench — load scenarios for the iii engine

Usage: iii-bench <scenario> [options]      (iii-bench <scenario> --help for its options)

Scenarios:
  invoke       caller → engine → callee: sequential latency, calls/s at 1/16/64/256 in flight
               (--direct: the same through a minimal relay, the limit to compare against)
  fanout       stream::set fan-out to 1/10/100 `stream`-trigger subscribers; checks delivery
  connections  100/1,000/10,000 idle workers: connect time, engine RSS per connection
  startup      spawn → first accepted worker connection, 10 times
  flood        engine RSS and a well-behaved caller's latency under each kind of flood
               (slow reader, forbidden calls, pre-auth frames, joins, fragments, 60 MiB call)
  store        stream::set throughput and latency per fsync mode; reads during compaction
  all          invoke, invoke --direct, fanout, connections and startup in turn
  relay        run the minimal relay (what invoke --direct spawns)

Where the traffic goes (every scenario but flood and store, which always spawn an engine
with their own config):
  --spawn               start our own engine (default): the `iii` binary next to iii-bench, on
                        free ports, temp config (trusted listener + file-based stream module),
                        log level warn; stopped at the end
  --url ws://HOST:PORT  use a running engine instead (fanout needs its stream module)
  --engine-pid <pid>    with --url: the engine's pid (connections reads its RSS)

Each scenario prints one JSON line (results, parameters, machine) and then a table on stdout.
Exit status: 0 ok, 1 a scenario failed its checks, 2 bad usage or could not run.
Build first: cargo build --release -p iii -p iii-bench
";

const ALL_HELP: &str = "\
iii-bench all — the engine-facing scenarios in turn, with default parameters

Usage: iii-bench all [--url ws://HOST:PORT | --spawn] [--engine-pid <pid>] [--payload <size>]

Runs invoke, invoke --direct, fanout, connections and startup (startup is skipped with --url).
Each prints its JSON line and table; the exit status is 1 if any of them failed its checks.
";

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let mut argv = std::env::args().skip(1);
    let Some(cmd) = argv.next() else {
        print!("{HELP}");
        return ExitCode::from(2);
    };
    let mut a = Args::new(argv.collect());
    if matches!(cmd.as_str(), "-h" | "--help" | "help") {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    if cmd == "relay" {
        return match relay::run(a) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        };
    }
    if a.flag("--help") || a.flag("-h") {
        let help = match cmd.as_str() {
            "invoke" => invoke::HELP,
            "fanout" => fanout::HELP,
            "connections" => connections::HELP,
            "startup" => startup::HELP,
            "flood" => flood::HELP,
            "store" => store::HELP,
            "all" => ALL_HELP,
            _ => HELP,
        };
        print!("{help}");
        return ExitCode::SUCCESS;
    }
    // Ten thousand connections need ten thousand descriptors, here and in a spawned engine
    // (which inherits the limit).
    procs::raise_nofile();
    let outcome = match cmd.as_str() {
        "invoke" => invoke::Opts::parse(&mut a)
            .and_then(|o| a.finish().map(|_| o))
            .and_then(|o| block_on(invoke::run(o))),
        "fanout" => fanout::Opts::parse(&mut a)
            .and_then(|o| a.finish().map(|_| o))
            .and_then(|o| block_on(fanout::run(o))),
        "connections" => connections::Opts::parse(&mut a)
            .and_then(|o| a.finish().map(|_| o))
            .and_then(|o| block_on(connections::run(o))),
        "startup" => startup::Opts::parse(&mut a)
            .and_then(|o| a.finish().map(|_| o))
            .and_then(|o| block_on(startup::run(o))),
        "flood" => flood::Opts::parse(&mut a)
            .and_then(|o| a.finish().map(|_| o))
            .and_then(|o| block_on(flood::run(o))),
        "store" => store::Opts::parse(&mut a)
            .and_then(|o| a.finish().map(|_| o))
            .and_then(|o| block_on(store::run(o))),
        "all" => run_all(a),
        other => Err(format!("unknown scenario {other:?} (see --help)")),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => fail(&e),
    }
}

fn fail(e: &str) -> ExitCode {
    eprintln!("iii-bench: {e}");
    ExitCode::from(2)
}

/// Runs one scenario future on a fresh actix system.
fn block_on<F>(f: F) -> Result<bool, String>
where
    F: std::future::Future<Output = Result<bool, String>>,
{
    actix::System::new().block_on(f)
}

/// Every scenario in turn, each with its defaults and the shared target options.
fn run_all(mut a: Args) -> Result<bool, String> {
    let url = a.value("--url")?;
    let spawn = a.flag("--spawn");
    let pid = a.value("--engine-pid")?;
    let payload = a.value("--payload")?;
    a.finish()?;
    let common = || {
        let mut v: Vec<String> = Vec::new();
        if let Some(u) = &url {
            v.extend(["--url".to_string(), u.clone()]);
        }
        if spawn {
            v.push("--spawn".into());
        }
        if let Some(p) = &pid {
            v.extend(["--engine-pid".to_string(), p.clone()]);
        }
        v
    };
    let with_payload = |mut v: Vec<String>| {
        if let Some(p) = &payload {
            v.extend(["--payload".to_string(), p.clone()]);
        }
        v
    };
    let mut ok = true;
    let mut step = |name: &str, r: Result<bool, String>| match r {
        Ok(passed) => ok &= passed,
        Err(e) => {
            eprintln!("iii-bench all: {name}: {e}");
            ok = false;
        }
    };
    let mut args = Args::new(with_payload(common()));
    step(
        "invoke",
        invoke::Opts::parse(&mut args).and_then(|o| block_on(invoke::run(o))),
    );
    let mut direct = with_payload(common());
    direct.push("--direct".into());
    let mut args = Args::new(direct);
    step(
        "invoke --direct",
        invoke::Opts::parse(&mut args).and_then(|o| block_on(invoke::run(o))),
    );
    let mut args = Args::new(common());
    step(
        "fanout",
        fanout::Opts::parse(&mut args).and_then(|o| block_on(fanout::run(o))),
    );
    let mut args = Args::new(common());
    step(
        "connections",
        connections::Opts::parse(&mut args).and_then(|o| block_on(connections::run(o))),
    );
    if url.is_some() {
        eprintln!("iii-bench all: startup skipped (it spawns the engine; --url was given)");
    } else {
        step(
            "startup",
            startup::Opts::parse(&mut Args::new(Vec::new()))
                .and_then(|o| block_on(startup::run(o))),
        );
    }
    Ok(ok)
}
