//! `iii-bench`: load scenarios for the iii engine, on our Rust worker client.
//!
//! This file owns the command line (clap: each scenario a subcommand with its own options and
//! `--help`, and `all`, which runs several in turn) and runs each scenario on an actix system.
//! Every scenario prints one JSON line of results on stdout, then a readable table.
//!
//! | file | owns |
//! |---|---|
//! | `invoke.rs` | caller → engine → callee latency/throughput, and the `--direct` baseline |
//! | `node.rs` | the published Node SDK as caller and callee (`tests/sdk/node-bench.mjs`) |
//! | `hop.rs` | engine or relay: what `invoke` and `node` send their calls through |
//! | `relay.rs` | the `relay` subcommand: the minimal WebSocket forwarder `--direct` measures |
//! | `fanout.rs` | `stream::set` fan-out to S `stream`-trigger subscribers, loss/duplicate check |
//! | `connections.rs` | C idle connections: connect time, engine RSS per connection |
//! | `startup.rs` | spawn → first accepted connection |
//! | `flood.rs` | engine RSS and a well-behaved caller's latency under one flood at a time |
//! | `floods.rs` | `flood`'s raw-socket flooders and what they sent and got back |
//! | `store.rs` | `stream::set` throughput/latency per fsync mode (the `store` scenario) |
//! | `compaction.rs` | `store`'s compaction check: `stream::get` latency while the store compacts |
//! | `http.rs` | HTTP requests through an `iii-http` route to a worker, or to a plain actix-web handler |
//! | `state.rs` | `state::set` / `state::get` rate and latency, durable, per fsync mode |
//! | `queue.rs` | `iii-queue` enqueue rate and send → run job latency, against direct calls |
//! | `cluster.rs` | two engines sharing Redis: cross- (Redis or bridge) vs same-engine calls, stream fan-out, 1 → 2 engines |
//! | `cluster_load.rs` | `cluster`'s call phases and CPU readings (engines, Redis, machine) |
//! | `cluster_report.rs` | `cluster`'s JSON line and tables |
//! | `cluster_stream.rs` | `cluster`'s stream phases: sets, a subscriber timing write → delivery |
//! | `target.rs` | spawned engine vs `--url`, client options, clients and tasks on other threads |
//! | `procs.rs` | child processes, scratch dirs, `/proc` readings, the open-file limit |
//! | `rawws.rs` | the lean idle WebSocket worker |
//! | `report.rs` | machine info, percentiles, JSON line + tables |
//! | `args.rs` | value parsers: counts, sizes, lists, on/off |

mod args;
mod cluster;
mod cluster_load;
mod cluster_report;
mod cluster_stream;
mod compaction;
mod connections;
mod fanout;
mod flood;
mod floods;
mod hop;
mod http;
mod invoke;
mod node;
mod procs;
mod queue;
mod rawws;
mod relay;
mod report;
mod sink;
mod startup;
mod state;
mod store;
mod target;

use std::process::ExitCode;

use clap::{Args, FromArgMatches, Parser, Subcommand};

use args::parse_size;
use target::Common;

const AFTER_HELP: &str = "\
Where the traffic goes (every scenario but flood, store, state, queue, http and cluster, which
always spawn their engines with their own config):
  --spawn               start our own engine (default): the `iii` binary next to iii-bench, on
                        free ports, temp config (trusted listener + file-based stream module),
                        log level warn; stopped at the end
  --url ws://HOST:PORT  use a running engine instead (fanout needs its stream module)
  --engine-pid <pid>    with --url: the engine's pid (connections reads its RSS)

Each scenario prints one JSON line (results, parameters, machine) and then a table on stdout.
Exit status: 0 ok, 1 a scenario failed its checks, 2 bad usage or could not run.
Build first: cargo build --release -p iii -p iii-bench";

/// The command line: `iii-bench <scenario> [options]`.
#[derive(Parser, Debug)]
#[command(name = "iii-bench", about = "Load scenarios for the iii engine")]
#[command(after_help = AFTER_HELP, arg_required_else_help = true)]
#[command(
    override_usage = "iii-bench <scenario> [options]   (iii-bench <scenario> --help for its options)"
)]
#[command(
    subcommand_value_name = "scenario",
    subcommand_help_heading = "Scenarios"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    Invoke(invoke::Opts),
    Node(node::Opts),
    Fanout(fanout::Opts),
    Connections(connections::Opts),
    Startup(startup::Opts),
    Flood(flood::Opts),
    Store(store::Opts),
    State(state::Opts),
    Queue(queue::Opts),
    Http(http::Opts),
    Cluster(cluster::Opts),
    All(AllOpts),
    Relay(relay::Opts),
    /// The plain HTTP server `http --direct` measures (started by the bench itself)
    #[command(hide = true)]
    HttpDirect(http::DirectOpts),
}

const ALL_ABOUT: &str = "\
The engine-facing scenarios in turn, with default parameters

Runs invoke, invoke --direct, fanout, connections and startup (startup is skipped with --url).
Each prints its JSON line and table; the exit status is 1 if any of them failed its checks.";

/// The `all` options.
#[derive(Args, Debug, Clone)]
#[command(about = ALL_ABOUT.lines().next(), long_about = ALL_ABOUT, args_override_self = true)]
struct AllOpts {
    #[command(flatten)]
    common: Common,
    /// Request payload size of the invoke runs: 100, 10k, 10KiB, 1m, 1MiB [default: 100]
    #[arg(long, value_name = "size", value_parser = parse_size)]
    payload: Option<usize>,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let scenario = Cli::parse().scenario;
    if let Scenario::HttpDirect(o) = scenario {
        return match http::serve_direct(o) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        };
    }
    if let Scenario::Relay(o) = scenario {
        return match relay::run(o) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        };
    }
    // Ten thousand connections need ten thousand descriptors, here and in a spawned engine
    // (which inherits the limit).
    procs::raise_nofile();
    let outcome = match scenario {
        Scenario::Invoke(o) => block_on(invoke::run(o)),
        Scenario::Node(o) => block_on(node::run(o)),
        Scenario::Fanout(o) => block_on(fanout::run(o)),
        Scenario::Connections(o) => block_on(connections::run(o)),
        Scenario::Startup(o) => block_on(startup::run(o)),
        Scenario::Flood(o) => block_on(flood::run(o)),
        Scenario::Store(o) => block_on(store::run(o)),
        Scenario::State(o) => block_on(state::run(o)),
        Scenario::Queue(o) => block_on(queue::run(o)),
        Scenario::Http(o) => block_on(http::run(o)),
        Scenario::Cluster(o) => block_on(cluster::run(o)),
        Scenario::All(o) => run_all(o),
        Scenario::Relay(_) | Scenario::HttpDirect(_) => unreachable!("handled above"),
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

/// A scenario's options with every default, as if it were given no option.
fn defaults<T: Args + FromArgMatches>() -> Result<T, String> {
    let cmd = T::augment_args(clap::Command::new("iii-bench"));
    cmd.try_get_matches_from(["iii-bench"])
        .and_then(|m| T::from_arg_matches(&m))
        .map_err(|e| e.to_string())
}

/// Every scenario in turn, each with its defaults and the shared target options.
fn run_all(a: AllOpts) -> Result<bool, String> {
    let mut ok = true;
    let mut step = |name: &str, r: Result<bool, String>| match r {
        Ok(passed) => ok &= passed,
        Err(e) => {
            eprintln!("iii-bench all: {name}: {e}");
            ok = false;
        }
    };
    let mut invoke: invoke::Opts = defaults()?;
    invoke.common = a.common.clone();
    invoke.payload = a.payload.unwrap_or(invoke.payload);
    step("invoke", block_on(invoke::run(invoke.clone())));
    invoke.relay.direct = true;
    step("invoke --direct", block_on(invoke::run(invoke)));
    let mut fanout: fanout::Opts = defaults()?;
    fanout.common = a.common.clone();
    step("fanout", block_on(fanout::run(fanout)));
    let mut connections: connections::Opts = defaults()?;
    connections.common = a.common.clone();
    step("connections", block_on(connections::run(connections)));
    if a.common.url.is_some() {
        eprintln!("iii-bench all: startup skipped (it spawns the engine; --url was given)");
    } else {
        step(
            "startup",
            defaults().and_then(|o| block_on(startup::run(o))),
        );
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(line: &str) -> Result<Scenario, clap::Error> {
        let argv = std::iter::once("iii-bench").chain(line.split_whitespace());
        Cli::try_parse_from(argv).map(|c| c.scenario)
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn options_parse_as_documented() {
        let line =
            "invoke --url ws://127.0.0.1:9 --engine-pid 42 --payload 10k --concurrency=1,64 \
                    --direct --relay-nodelay off --calls 2k";
        let Ok(Scenario::Invoke(o)) = parse(line) else {
            panic!("{line}")
        };
        assert_eq!(o.common.url.as_deref(), Some("ws://127.0.0.1:9"));
        assert_eq!(o.common.engine_pid, Some(42));
        assert_eq!((o.payload, o.calls, o.warmup), (10 << 10, Some(2000), None));
        assert_eq!(o.levels, vec![1, 64]);
        assert!(o.relay.direct && !o.relay.relay_nodelay);
        assert_eq!(o.relay.relay_threads, 2);

        let Ok(Scenario::Store(o)) = parse("store --fsync every_second --sets 2000 --spawn") else {
            panic!("store")
        };
        assert_eq!(o.fsync, vec!["every_second"]);
        assert_eq!(
            (o.sets, o.levels.clone(), o.compaction),
            (Some(2000), vec![1, 64], true)
        );
        assert!(o.spawn.check("store", "").is_ok());

        let Ok(Scenario::State(o)) = parse("state --fsync always --calls 500") else {
            panic!("state")
        };
        assert_eq!(
            (o.fsync, o.calls, o.levels),
            (vec!["always".to_string()], Some(500), vec![1, 64])
        );
        assert!(parse("state --fsync sometimes").is_err());

        let Ok(Scenario::Queue(o)) = parse("queue --fsync always --jobs 2k --concurrency 64")
        else {
            panic!("queue")
        };
        assert_eq!(
            (o.fsync, o.jobs, o.levels, o.payload),
            (vec!["always".to_string()], 2000, vec![64], 100)
        );
        assert!(parse("queue --fsync never").is_err());
        let Ok(Scenario::Queue(o)) = parse("queue --url ws://127.0.0.1:9") else {
            panic!("queue --url")
        };
        assert!(o.spawn.check("queue", "").is_err());

        let line = "cluster --concurrency 1,16,64 --calls 2k --load-callers 6 --load-in-flight 32 \
                    --load-calls 5k --redis-server /opt/redis/bin/redis-server";
        let Ok(Scenario::Cluster(o)) = parse(line) else {
            panic!("{line}")
        };
        assert_eq!((o.levels, o.calls, o.warmup), (vec![1, 16, 64], 2000, 200));
        assert_eq!(
            (o.load_callers, o.load_in_flight, o.load_calls),
            (6, 32, 5000)
        );
        assert_eq!(o.redis_server, "/opt/redis/bin/redis-server");
        let Ok(Scenario::Cluster(o)) = parse("cluster --url ws://127.0.0.1:9") else {
            panic!("cluster --url")
        };
        assert!(o.spawn.check("cluster", "").is_err());
        assert!(parse("cluster --concurrency 0").is_err());
        let Ok(Scenario::Cluster(o)) = parse("cluster --phases calls,load") else {
            panic!("cluster --phases")
        };
        assert!(o.runs("calls") && !o.runs("stream") && o.runs("load"));
        assert!(parse("cluster --phases nope").is_err());

        let Ok(Scenario::Flood(o)) = parse("flood --kinds forbidden,big --seconds 2") else {
            panic!("flood")
        };
        assert_eq!(o.kinds, vec!["forbidden", "big"]);
        assert_eq!(o.seconds, std::time::Duration::from_secs(2));
        let Ok(Scenario::Flood(o)) = parse("flood --url ws://127.0.0.1:9") else {
            panic!("flood --url")
        };
        assert!(o.spawn.check("flood", "").is_err());

        // The last of a repeated option wins.
        let Ok(Scenario::Fanout(o)) = parse("fanout --sets 1 --sets 2 --subscribers 1") else {
            panic!("fanout")
        };
        assert_eq!((o.sets, o.subscribers), (2, vec![1]));
        let Ok(Scenario::Flood(o)) = parse("flood --kinds joins,big --kinds forbidden") else {
            panic!("flood --kinds")
        };
        assert_eq!(o.kinds, vec!["forbidden"]);

        let Ok(Scenario::Node(o)) = parse("node --direct --otel off --concurrency 8 --warmup 10")
        else {
            panic!("node")
        };
        assert!(o.relay.direct && !o.otel);
        assert_eq!((o.levels, o.warmup, o.sequential), (vec![8], 10, 3000));
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let o: invoke::Opts = defaults().unwrap();
        assert_eq!(
            (o.payload, o.levels, o.relay.direct),
            (100, vec![1, 16, 64, 256], false)
        );
        assert_eq!((o.relay.relay_threads, o.relay.relay_nodelay), (2, true));
        let o: store::Opts = defaults().unwrap();
        assert_eq!(o.fsync, vec!["every_second", "always"]);
        let o: queue::Opts = defaults().unwrap();
        assert_eq!(
            (o.fsync, o.levels, o.jobs, o.warmup),
            (
                vec![
                    "every_second".to_string(),
                    "always".to_string(),
                    "redis".to_string()
                ],
                vec![1, 64],
                10_000,
                200
            )
        );
        let o: flood::Opts = defaults().unwrap();
        assert_eq!(o.kinds, floods::KINDS);
        let o: cluster::Opts = defaults().unwrap();
        assert_eq!(
            (o.levels, o.calls, o.warmup, o.payload),
            (vec![1, 64], 20_000, 200, 100)
        );
        assert_eq!(
            (o.load_callers, o.load_in_flight, o.load_calls),
            (4, 64, 50_000)
        );
        assert_eq!(o.redis_server, "redis-server");
        assert_eq!(o.phases, cluster::PHASES);
        let o: connections::Opts = defaults().unwrap();
        assert_eq!((o.levels, o.parallel), (vec![100, 1000, 10_000], 64));
        let o: fanout::Opts = defaults().unwrap();
        assert_eq!(
            (o.subscribers, o.sets, o.in_flight),
            (vec![1, 10, 100], 2000, 16)
        );
    }

    #[test]
    fn bad_usage_exits_2() {
        for line in [
            "",
            "nope",
            "invoke --url ws://127.0.0.1:1 --spawn",
            "invoke --url http://127.0.0.1:1",
            "invoke --payload 1x",
            "invoke --concurrency 0,1",
            "invoke --relay-url ws://127.0.0.1:1",
            "invoke --nope",
            "flood --kinds nope",
            "store --compaction maybe",
        ] {
            assert_eq!(parse(line).unwrap_err().exit_code(), 2, "{line:?}");
        }
    }
}
