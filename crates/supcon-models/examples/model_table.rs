//! Prints the architecture table of docs/src/models.md (parameters and FLOPs, computed
//! analytically by `ResNetSpec`): `cargo run -p supcon-models --example model_table`.

use supcon_models::{Architecture, Stem};

fn millions(x: u64) -> String {
    if x >= 1_000_000 {
        format!("{:.2} M", x as f64 / 1e6)
    } else {
        format!("{:.1} k", x as f64 / 1e3)
    }
}

fn giga(x: u64) -> String {
    if x >= 1_000_000_000 {
        format!("{:.2} G", x as f64 / 1e9)
    } else {
        format!("{:.1} M", x as f64 / 1e6)
    }
}

fn main() {
    println!("| architecture | blocks | widths | feature dim | params, 1 channel | params, 3 channels | MLP head (→128) | MACs 28×28×1 | FLOPs 28×28×1 | MACs 32×32×3 | FLOPs 32×32×3 |");
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for arch in Architecture::ALL {
        let gray = arch.spec(1, Stem::Cifar, false);
        let rgb = arch.spec(3, Stem::Cifar, false);
        let d = rgb.feature_dim() as u64;
        let head = d * d + d + d * 128 + 128;
        println!(
            "| `{arch}` | {:?} {:?} | {:?} | {d} | {} ({}) | {} ({}) | {} | {} | {} | {} | {} |",
            rgb.block,
            rgb.blocks_per_stage,
            rgb.widths,
            millions(gray.param_count()),
            gray.param_count(),
            millions(rgb.param_count()),
            rgb.param_count(),
            millions(head),
            giga(gray.macs([28, 28])),
            giga(gray.flops([28, 28])),
            giga(rgb.macs([32, 32])),
            giga(rgb.flops([32, 32])),
        );
    }
}
