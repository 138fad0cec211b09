//! `supcon`: supervised contrastive learning from the command line (see `supcon --help`).

use clap::Parser;
use std::io::IsTerminal;
use std::process::ExitCode;
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
    // First Ctrl-C: finish the current step, write a checkpoint, print how to resume.
    // Second: leave at once.
    let handler = ctrlc::set_handler(|| {
        if supcon_train::pipeline::interrupted() {
            eprintln!("\nsecond interrupt: exiting without a checkpoint");
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: finishing the current step and writing a checkpoint (Ctrl-C again to quit now)");
        supcon_train::pipeline::request_interrupt();
    });
    if let Err(e) = handler {
        tracing::warn!("no Ctrl-C handler: {e}");
    }
    match execute(&cli) {
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
            eprintln!(
                "interrupted during {stage} (epoch {}, step {step}); checkpoint written.\nresume with:\n  {resume_command}",
                epoch + 1
            );
            ExitCode::from(130)
        }
        Err(e) => {
            // Our errors carry their causes in their messages.
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
