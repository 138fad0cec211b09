//! `supcon`: supervised contrastive learning from the command line (see `supcon --help`).

use clap::Parser;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::rc::Rc;
use supcon_train::cli::{execute, Cli};
use supcon_train::TrainError;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: logs piped to a file stay plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    // One process, or one rank of a job started by mpirun / srun.
    let comm: supcon_train::dist::Comm =
        match supcon_collectives::connect(cli.collectives.into(), None) {
            Ok(comm) => watched(comm, cli.collective_timeout),
            Err(e) => {
                eprintln!("error: {}", supcon_train::error::chain(&e));
                return ExitCode::FAILURE;
            }
        };
    let (rank, ranks) = (comm.rank(), comm.world_size());
    // Every log line of a rank says which one it is.
    let _rank_span = (ranks > 1).then(|| tracing::info_span!("rank", rank, of = ranks).entered());
    if ranks > 1 {
        tracing::info!(
            pid = std::process::id(),
            transport = comm.transport(),
            "rank started"
        );
        // A panicking rank must end the job, not leave the others waiting in a collective:
        // abort, and the launcher stops every rank and says which one died.
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            report(info);
            eprintln!("rank {rank} of {ranks} panicked: ending the job");
            std::process::abort();
        }));
    }
    // First Ctrl-C (or SIGTERM, which mpirun and Slurm send to every rank): finish the current
    // step, write a checkpoint, print how to resume. Second: leave at once.
    let handler = ctrlc::set_handler(|| {
        if supcon_train::interrupt::requested() {
            eprintln!("\nsecond interrupt: exiting without a checkpoint");
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: finishing the current step and writing a checkpoint (Ctrl-C again to quit now)");
        supcon_train::interrupt::request();
    });
    if let Err(e) = handler {
        tracing::warn!("no Ctrl-C handler: {e}");
    }
    match execute(&cli, comm.clone()) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(TrainError::Interrupted {
            stage,
            epoch,
            step,
            resume_command,
        }) => {
            // Every rank stops at the same step (they agree on it); rank 0 speaks for them.
            if rank == 0 {
                let launcher = if ranks > 1 {
                    format!("mpirun -np {ranks} … ")
                } else {
                    String::new()
                };
                eprintln!(
                    "interrupted during {stage} (epoch {}, step {step}); checkpoint written.\nresume with:\n  {launcher}{resume_command}",
                    epoch + 1
                );
            }
            ExitCode::from(130)
        }
        Err(e) if ranks > 1 => {
            // The others may be waiting in a collective for this rank: end the whole job.
            eprintln!(
                "rank {rank} of {ranks}: error: {}",
                supcon_train::error::chain(&e)
            );
            comm.abort(1)
        }
        Err(e) => {
            eprintln!("error: {}", supcon_train::error::chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The ranks of a job under `--collective-timeout`: a collective that waits longer ends this
/// rank (abort, as a panicking rank does), and the launcher then ends the job.
fn watched(
    comm: Box<dyn supcon_collectives::Collectives>,
    timeout_seconds: u64,
) -> supcon_train::dist::Comm {
    if comm.world_size() == 1 || timeout_seconds == 0 {
        return Rc::from(comm);
    }
    let timeout = std::time::Duration::from_secs(timeout_seconds);
    Rc::new(supcon_collectives::Watchdog::new(
        comm,
        timeout,
        move |stalled| {
            eprintln!("error: {stalled} (--collective-timeout {timeout_seconds}): ending the job");
            std::process::abort();
        },
    ))
}
