//! `strata`: the one binary. Servers (`dev`, `agent`, `compactor`) and user commands (`topic`,
//! `produce`, `consume`, `group`, `archive`, `stats`).

mod acl;
mod archive;
mod args;
mod bench;
mod consume;
mod group;
mod produce;
mod server;
mod target;
mod topic;
mod transactions;

use clap::Parser;

/// jemalloc, not the system allocator: request frames and segment buffers are megabytes,
/// allocated and freed many times a second, and glibc hands such blocks back to the
/// kernel, so each new one is faulted in and zeroed by the kernel again (half of the
/// agent's CPU on a Kafka produce load). jemalloc keeps freed pages for reuse for a few
/// seconds (`dirty_decay_ms`) before returning them; its options are set at build time in
/// `.cargo/config.toml`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use crate::args::{Cli, Command};
use crate::target::Target;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let server_command = matches!(
        cli.command,
        Command::Dev(_) | Command::Agent(_) | Command::Compactor(_)
    );
    init_tracing(if server_command { "info" } else { "warn" });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let client = cli.client;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Dev(args) => server::run_dev(*args, &client).await,
            Command::Agent(args) => server::run_agent(*args, &client).await,
            Command::Compactor(args) => server::run_compactor(*args).await,
            user => run_user_command(user, &Target::new(&client)?).await,
        }
    });
    match result {
        // Whoever reads the output stopped (`strata consume … | head`): not an error.
        Err(e)
            if e.chain().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// A user command, against the agent `server` names.
async fn run_user_command(command: Command, server: &Target) -> anyhow::Result<()> {
    match command {
        Command::Topic(command) => topic::run(server, command).await,
        Command::Produce(args) => produce::run(server, args).await,
        Command::Consume(args) => consume::run(server, args).await,
        Command::Stats => topic::stats(server).await,
        Command::Compactors => topic::compactors(server).await,
        Command::Health => topic::health(server).await,
        Command::Cluster(command) => topic::cluster(server, command).await,
        Command::Group(command) => group::run(server, command).await,
        Command::Archive(command) => archive::run(server, command).await,
        Command::Transactions(command) => transactions::run(server, command).await,
        Command::Bench(command) => bench::run(server, command).await,
        Command::Acl(command) => acl::run(server, command).await,
        Command::Dev(_) | Command::Agent(_) | Command::Compactor(_) => {
            unreachable!("main runs the server commands")
        }
    }
}

fn init_tracing(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
