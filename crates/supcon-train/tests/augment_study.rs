//! `supcon study augment`: a 2 × 2 grid on a tiny subset writes its table, results and
//! heatmap; run again, it reads the finished cells back, resumes a cell that lost its report,
//! and retrains only a cell that is gone; another study in the same folder is refused.

mod common;

use std::path::Path;
use std::process::Command;

use common::{run, stderr, supcon, FAST};

fn study(out: &Path, ops: &str) -> Command {
    let mut cmd = supcon();
    cmd.args(["study", "augment", "--quiet", "--ops", ops, "--out"])
        .arg(out)
        .args(FAST);
    cmd
}

fn results(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("study.json")).unwrap()).unwrap()
}

#[test]
fn a_two_by_two_study_writes_its_heatmap_and_resumes_cell_by_cell() {
    common::require_fashion_mnist();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("study");
    let first = run(&mut study(&out, "crop,blur"), true);
    let table = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(
        table.contains("| **crop** |") && table.contains("| crop+blur |"),
        "{table}"
    );

    let cells = results(&out)["cells"].as_array().unwrap().clone();
    let names: Vec<&str> = cells.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["crop", "crop+blur", "blur"]);
    for cell in &cells {
        let probe = cell["probe_top1"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&probe), "{cell}");
    }
    let config = std::fs::read_to_string(out.join("cells/crop+blur/config.toml")).unwrap();
    assert!(
        config.contains("first_view_augment = \"none\"")
            && config.contains("augment = \"resized-crop:0.35+blur:1\""),
        "{config}"
    );
    let heatmap = image::open(out.join("heatmap.png")).unwrap();
    assert!(heatmap.width() > 200 && heatmap.height() > 200);

    // Again: a finished cell is read back untouched, a cell without its report resumes from
    // its checkpoints, a missing cell trains afresh; the figures stay.
    let kept = out.join("cells/crop/report.json");
    let kept_bytes = std::fs::read(&kept).unwrap();
    std::fs::remove_file(out.join("cells/crop+blur/report.json")).unwrap();
    std::fs::remove_dir_all(out.join("cells/blur")).unwrap();
    run(&mut study(&out, "crop,blur"), true);
    assert_eq!(std::fs::read(&kept).unwrap(), kept_bytes);
    let again = results(&out)["cells"].as_array().unwrap().clone();
    for (a, b) in cells.iter().zip(&again) {
        assert_eq!(a["probe_top1"], b["probe_top1"], "{a} / {b}");
    }

    // Another grid in the same folder would mix two studies' cells.
    let err = stderr(&run(&mut study(&out, "crop,rotate"), false));
    assert!(err.contains("holds another study"), "{err}");
    let err = stderr(&run(
        study(&dir.path().join("other"), "crop").args(["--preset", "quick-cpu"]),
        false,
    ));
    assert!(err.contains("--set"), "{err}");
}
