//! The report rendered: the summary table printed at the end of a run and `report.md`.

use std::fmt::Write as _;
use std::path::Path;

use super::Report;
use crate::eval::{ClassificationMetrics, RobustnessReport};

impl Report {
    /// The summary table: one row per stage with method, epochs, wall time, images/s,
    /// validation, test and kNN top-1 (a Markdown table, aligned for a terminal too).
    pub fn summary_table(&self) -> String {
        // A tuning run evaluates on the validation split: its column says so.
        let evaluated = format!("{} top-1", self.evaluated_on);
        let header = [
            "method",
            "stage",
            "epochs",
            "wall time",
            "images/s",
            "val top-1",
            evaluated.as_str(),
            "kNN top-1",
        ];
        // Data-parallel runs say on how many ranks each stage ran.
        let ranks = self.stages.iter().any(|s| s.ranks > 1);
        let mut header = header.to_vec();
        if ranks {
            header.insert(3, "ranks");
        }
        let rows: Vec<Vec<String>> = self
            .stages
            .iter()
            .map(|s| {
                let mut row = vec![
                    s.method.clone(),
                    s.stage.to_string(),
                    s.epochs.to_string(),
                    format_wall(s.wall_seconds),
                    format!("{:.0}", s.images_per_second),
                    percent(s.val_top1),
                    percent(s.test_top1),
                    percent(s.knn_top1),
                ];
                if ranks {
                    row.insert(3, s.ranks.to_string());
                }
                row
            })
            .collect();
        markdown_table(&header, &rows, 2)
    }

    /// The whole report as Markdown. Plots in `run_dir/plots/` are linked when present.
    pub fn to_markdown(&self, run_dir: &Path) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# Run `{}`\n", self.run_name);
        if let Some(dataset) = &self.dataset {
            let _ = writeln!(
                md,
                "Data: {dataset}; accuracies measured on the {} split\n",
                self.evaluated_on
            );
        }
        let _ = write!(md, "## Summary\n\n{}", self.summary_table());
        self.embeddings_section(&mut md);
        self.per_class_section(&mut md);
        self.robustness_section(&mut md);
        plots_section(run_dir, &mut md);
        md
    }

    /// The kNN and geometry table, when an evaluation has them.
    fn embeddings_section(&self, md: &mut String) {
        let embedding_rows: Vec<Vec<String>> = self
            .evaluations
            .iter()
            .filter(|e| e.knn.is_some() || e.geometry.is_some())
            .map(|e| {
                let g = e.geometry.as_ref();
                vec![
                    e.method.clone(),
                    percent(e.knn.as_ref().map(|k| k.top1)),
                    percent(e.knn.as_ref().map(|k| k.top5)),
                    g.and_then(|g| g.alignment)
                        .map_or("–".into(), |v| format!("{v:.3}")),
                    g.map_or("–".into(), |g| format!("{:.3}", g.uniformity)),
                    g.map_or("–".into(), |g| {
                        format!("{:.1} / {}", g.effective_rank, g.dim)
                    }),
                ]
            })
            .collect();
        if !embedding_rows.is_empty() {
            let knn = self.evaluations.iter().find_map(|e| e.knn.as_ref());
            let _ = writeln!(
                *md,
                "\n## Embeddings\n\nWeighted kNN (k = {}, cosine, weights exp(sim / {})) with the \
                 training embeddings as the bank; alignment (lower is better) and uniformity \
                 (lower is more uniform) after Wang & Isola (2020), t = 2; effective rank after \
                 Roy & Vetterli (2007) out of the embedding dimension.\n",
                knn.map_or(20, |k| k.k),
                knn.map_or(0.07, |k| k.temperature),
            );
            md.push_str(&markdown_table(
                &[
                    "method",
                    "kNN top-1",
                    "kNN top-5",
                    "alignment",
                    "uniformity",
                    "effective rank",
                ],
                &embedding_rows,
                1,
            ));
        }
    }

    /// Per-class accuracy and each method's confusion matrix, when an evaluation classified.
    fn per_class_section(&self, md: &mut String) {
        let classified: Vec<(&str, &ClassificationMetrics)> = self
            .evaluations
            .iter()
            .filter_map(|e| e.classification.as_ref().map(|c| (e.method.as_str(), c)))
            .collect();
        if !classified.is_empty() {
            let _ = writeln!(*md, "\n## Per-class {} accuracy\n", self.evaluated_on);
            let classes = classified
                .iter()
                .map(|(_, c)| c.per_class.len())
                .max()
                .unwrap_or(0);
            let mut header = vec!["class".to_string()];
            header.extend(classified.iter().map(|(m, _)| m.to_string()));
            let rows: Vec<Vec<String>> =
                (0..classes)
                    .map(|class| {
                        let mut row = vec![self.class_name(class)];
                        row.extend(classified.iter().map(|(_, c)| {
                            percent(c.per_class.get(class).and_then(|a| a.accuracy))
                        }));
                        row
                    })
                    .collect();
            let header: Vec<&str> = header.iter().map(String::as_str).collect();
            md.push_str(&markdown_table(&header, &rows, 1));
            for (method, metrics) in &classified {
                let _ = writeln!(
                    *md,
                    "\n### Confusion matrix: {method}\n\nRows: true class, columns: predicted.\n"
                );
                let n = metrics.confusion.num_classes;
                let mut header = vec!["true \\ pred".to_string()];
                header.extend((0..n).map(|c| c.to_string()));
                let rows: Vec<Vec<String>> = metrics
                    .confusion
                    .counts
                    .iter()
                    .enumerate()
                    .map(|(t, counts)| {
                        let mut row =
                            vec![format!("{t} {}", self.class_name(t)).trim().to_string()];
                        row.extend(counts.iter().map(u64::to_string));
                        row
                    })
                    .collect();
                let header: Vec<&str> = header.iter().map(String::as_str).collect();
                md.push_str(&markdown_table(&header, &rows, 1));
            }
        }
    }

    /// Top-1 under each corruption, when an evaluation measured them.
    fn robustness_section(&self, md: &mut String) {
        let robust: Vec<(&str, &RobustnessReport)> = self
            .evaluations
            .iter()
            .filter_map(|e| e.robustness.as_ref().map(|r| (e.method.as_str(), r)))
            .collect();
        if !robust.is_empty() {
            let _ = writeln!(
                *md,
                "\n## Robustness\n\nTest top-1 under each corruption, mean over severities 1–5 \
                 (per severity in `report.json`).\n"
            );
            let mut names: Vec<&str> = Vec::new();
            for (_, r) in &robust {
                for name in r.corruptions() {
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
            }
            let mut header = vec!["corruption".to_string()];
            header.extend(robust.iter().map(|(m, _)| m.to_string()));
            let mut rows = vec![{
                let mut row = vec!["clean".to_string()];
                row.extend(robust.iter().map(|(_, r)| percent(Some(r.clean_top1))));
                row
            }];
            for name in names {
                let mut row = vec![name.to_string()];
                row.extend(robust.iter().map(|(_, r)| percent(r.mean_for(name))));
                rows.push(row);
            }
            let mut mean = vec!["mean corrupted".to_string()];
            mean.extend(
                robust
                    .iter()
                    .map(|(_, r)| percent(Some(r.mean_corrupted_top1))),
            );
            rows.push(mean);
            let header: Vec<&str> = header.iter().map(String::as_str).collect();
            md.push_str(&markdown_table(&header, &rows, 1));
        }
    }

    fn class_name(&self, class: usize) -> String {
        self.class_names
            .get(class)
            .cloned()
            .unwrap_or_else(|| class.to_string())
    }
}

/// `91.23%`, or `–` when not measured.
fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_string(), |v| format!("{:.2}%", 100.0 * v))
}

/// `12m 34s` (or `1h 02m 05s`, `8.2s`).
fn format_wall(seconds: f64) -> String {
    if seconds < 60.0 {
        return format!("{seconds:.1}s");
    }
    let total = seconds.round() as u64;
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else {
        format!("{m}m {s:02}s")
    }
}

/// A Markdown pipe table padded to aligned columns; columns from `first_numeric` on are
/// right-aligned.
fn markdown_table(header: &[&str], rows: &[Vec<String>], first_numeric: usize) -> String {
    let columns = header.len();
    let width = |text: &str| text.chars().count();
    // At least 3 wide: the separator row needs `---` / `--:`.
    let mut widths: Vec<usize> = header.iter().map(|h| width(h).max(3)).collect();
    for row in rows {
        for (c, cell) in row.iter().enumerate().take(columns) {
            widths[c] = widths[c].max(width(cell));
        }
    }
    let pad = |text: &str, c: usize| {
        let fill = " ".repeat(widths[c] - width(text));
        if c >= first_numeric {
            format!("{fill}{text}")
        } else {
            format!("{text}{fill}")
        }
    };
    let mut out = String::new();
    let line = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
    out.push_str(&line(
        header.iter().enumerate().map(|(c, h)| pad(h, c)).collect(),
    ));
    out.push_str(&line(
        (0..columns)
            .map(|c| {
                let dashes = "-".repeat(widths[c]);
                if c >= first_numeric {
                    format!("{}:", &dashes[1..])
                } else {
                    dashes
                }
            })
            .collect(),
    ));
    for row in rows {
        out.push_str(&line(
            (0..columns)
                .map(|c| pad(row.get(c).map_or("", String::as_str), c))
                .collect(),
        ));
    }
    out
}

/// Links to the plots of `run_dir/plots/` that exist.
fn plots_section(run_dir: &Path, md: &mut String) {
    let plots: Vec<&str> = crate::plots::PLOT_FILES
        .iter()
        .copied()
        .filter(|name| run_dir.join(crate::plots::PLOTS_DIR).join(name).exists())
        .collect();
    if !plots.is_empty() {
        let _ = writeln!(*md, "\n## Plots\n");
        for name in plots {
            let _ = writeln!(*md, "![{name}]({}/{name})\n", crate::plots::PLOTS_DIR);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_helpers() {
        assert_eq!(format_wall(8.24), "8.2s");
        assert_eq!(format_wall(3725.0), "1h 02m 05s");
        assert_eq!(percent(None), "–");
        assert_eq!(percent(Some(0.5)), "50.00%");
    }
}
