//! `cargo xtask bench augment [--batches N] [--threads N] [--skip-torchvision]`: SupContrast's
//! two-view training transform through supcon-augment (release build of the
//! `augment_throughput` example) and through torchvision (`benches/augment_torchvision.py`,
//! PIL per-image pipeline, DataLoader with 2 worker processes, `torch.set_num_threads(2)`),
//! on the same machine in the same run. Writes `target/bench-results/augment.json`.
//!
//! torchvision lives in the Python environment `<cache>/bench-venv` (`crate::python`), with the
//! wheels of `WHEELS` (shared with `cargo xtask bench train`, `bench interop` and `bench
//! methods`).

pub(crate) use crate::python::PythonEnv;
use crate::util::{build_release, field, machine, project_root, write_bench_result, OptionArgs};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

/// What the reference scripts import: torch and torchvision, safetensors for the state dict
/// that `cargo xtask bench interop` exports (its `torch` extra brings the `packaging` module
/// that `safetensors.torch` imports), and lightly, the peer of `cargo xtask bench methods`.
const WHEELS: &[&str] = &[
    "torch==2.11.0",
    "torchvision==0.26.0",
    "safetensors[torch]==0.7.0",
    "lightly==1.6.0",
];

struct Options {
    threads: usize,
    batches: usize,
    torchvision_batches: usize,
    skip_torchvision: bool,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        threads: 2,
        batches: 400,
        torchvision_batches: 40,
        skip_torchvision: false,
    };
    let mut args = OptionArgs::new(args);
    while let Some(arg) = args.next_option() {
        match arg {
            "--threads" => o.threads = args.count(arg)?,
            "--batches" => o.batches = args.count(arg)?,
            "--torchvision-batches" => o.torchvision_batches = args.count(arg)?,
            "--skip-torchvision" => o.skip_torchvision = true,
            other => bail!(
                "unknown option `{other}` for `cargo xtask bench augment` \
                 (--threads N, --batches N, --torchvision-batches N, --skip-torchvision)"
            ),
        }
    }
    Ok(o)
}

/// The benchmark's Python: `<cache>/bench-venv` with [`WHEELS`], made once.
pub(crate) fn bench_python() -> Result<PythonEnv> {
    crate::python::environment("bench-venv", WHEELS)
}

/// The last JSON line a benchmark printed.
pub(crate) fn json_line(output: &std::process::Output, what: &str) -> Result<String> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .map(str::to_owned)
        .with_context(|| format!("{what} printed no JSON line:\n{stdout}"))
}

/// Images per wall-clock second, and per CPU second of all the processes involved.
#[derive(Clone, Copy)]
struct Rate {
    wall: f64,
    cpu: Option<f64>,
}

fn rate(line: &str) -> Result<Rate> {
    Ok(Rate {
        wall: field(line, "img_per_s").with_context(|| format!("no img_per_s in {line}"))?,
        cpu: field(line, "img_per_cpu_s"),
    })
}

fn ours(exe: &Path, recipe: &str, o: &Options) -> Result<Rate> {
    let output = Command::new(exe)
        .args(["--recipe", recipe, "--json"])
        .args(["--threads", &o.threads.to_string()])
        .args(["--batches", &o.batches.to_string()])
        .output()
        .with_context(|| format!("running {}", exe.display()))?;
    rate(&json_line(&output, "augment_throughput")?)
}

fn torchvision(python: &PythonEnv, recipe: &str, o: &Options) -> Result<Rate> {
    let script = project_root()
        .join("benches")
        .join("augment_torchvision.py");
    let output = python
        .command()
        .arg(&script)
        .args(["--recipe", recipe, "--json"])
        .args(["--workers", &o.threads.to_string()])
        .args(["--batches", &o.torchvision_batches.to_string()])
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    rate(&json_line(&output, "augment_torchvision.py")?)
}

fn num(v: Option<f64>) -> String {
    v.map_or("null".into(), |v| format!("{v:.1}"))
}

fn ratio2(v: Option<f64>) -> String {
    v.map_or("null".into(), |v| format!("{v:.2}"))
}

pub fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    let python = if o.skip_torchvision {
        None
    } else {
        Some(bench_python()?)
    };
    let exe = build_release(
        &["-p", "supcon-augment", "--example", "augment_throughput"],
        "examples/augment_throughput",
    )?;

    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
    let mut fields = Vec::new();
    for (recipe, prefix) in [("cifar", ""), ("fmnist", "fmnist_")] {
        let ours = ours(&exe, recipe, &o)?;
        let theirs = python
            .as_ref()
            .map(|p| torchvision(p, recipe, &o))
            .transpose()?;
        let wall_ratio = ratio(Some(ours.wall), theirs.map(|t| t.wall));
        let cpu_ratio = ratio(ours.cpu, theirs.and_then(|t| t.cpu));
        let show = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
        let times = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}×"));
        println!(
            "{recipe:>6}: supcon-augment {:>8.0} img/s | torchvision {:>6} img/s | ratio {:>7}   \
             (per CPU second: {} vs {}, ratio {})",
            ours.wall,
            show(theirs.map(|t| t.wall)),
            times(wall_ratio),
            show(ours.cpu),
            show(theirs.and_then(|t| t.cpu)),
            times(cpu_ratio),
        );
        fields.push(format!("\"{prefix}supcon_img_per_s\": {:.1}", ours.wall));
        fields.push(format!(
            "\"{prefix}torchvision_img_per_s\": {}",
            num(theirs.map(|t| t.wall))
        ));
        fields.push(format!("\"{prefix}ratio\": {}", ratio2(wall_ratio)));
        fields.push(format!(
            "\"{prefix}supcon_img_per_cpu_s\": {}",
            num(ours.cpu)
        ));
        fields.push(format!(
            "\"{prefix}torchvision_img_per_cpu_s\": {}",
            num(theirs.and_then(|t| t.cpu))
        ));
        fields.push(format!("\"{prefix}cpu_ratio\": {}", ratio2(cpu_ratio)));
    }
    let json = format!(
        "{{\n  \"benchmark\": \"augment\",\n  \"recipe\": \"SupContrast two-view recipe, batch 256: \
         CIFAR-like 32x32 RGB (fmnist_*: presets::fashion_mnist on 28x28 gray)\",\n  {},\n  \
         \"threads\": {},\n  \"torchvision_workers\": {},\n  \"machine\": \"{}\"\n}}\n",
        fields.join(",\n  "),
        o.threads,
        o.threads,
        machine().replace('"', "'"),
    );
    let path = write_bench_result("augment", &json)?;
    println!("wrote {}", path.display());
    Ok(())
}
