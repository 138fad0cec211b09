//! `loss_npy`: the SupCon loss of a `.npy` file of features, from the command line.
//!
//! ```text
//! cargo run -p supcon-loss --release --features npy --example loss_npy -- FEATURES.npy [LABELS.npy]
//!     [--temperature T] [--base-temperature B] [--variant out|in] [--contrast-mode all|one]
//!     [--normalize] [--queue KEYS.npy --queue-labels QL.npy] [--grad-out G.npy]
//! ```
//!
//! FEATURES is `[batch, views, dim]` float32 or float64, LABELS `[batch]` int64 or int32. Prints
//! one JSON line `{"loss": <f64>, "anchors": <int>}`; `--grad-out` writes ∂loss/∂features in
//! the features' shape and type (float64 features run in float64). Needs the `npy` feature:
//! `--features npy`. `supcon loss` reads the same files with the same code and adds the
//! MoCo, InstDisc and SwAV losses.

mod cli;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match cli::parse_args(&args).and_then(|args| cli::run(&args)) {
        Ok(report) => println!("{}", report.json()),
        Err(err) => {
            eprintln!("loss_npy: {err:#}");
            std::process::exit(1);
        }
    }
}
