//! PNG plots of a run with `plotters`' bitmap backend: loss and learning-rate curves per
//! stage, accuracy per epoch, and a 2-D PCA of the test embeddings coloured by class.
//!
//! Text is drawn with `plotters`' `ab_glyph` renderer from a TrueType font read at run time
//! (DejaVu Sans from Debian's `fonts-dejavu-core`, which `cargo xtask setup` installs), so
//! no fontconfig / freetype is needed. When the font is missing or unreadable the plots are
//! still drawn, without any text, and a warning is logged: a run never fails for a font.
//!
//! Each PNG is rendered into a temporary file beside the target and renamed over it
//! (`supcon-atomic`).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ndarray::{ArrayView2, Axis};
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::error::TrainError;
use crate::vocabulary::{MetricRecord, RecordKind, Stage};

/// Folder of the plots inside a run folder.
pub const PLOTS_DIR: &str = "plots";
/// Loss and learning rate per step, one row of panels per stage.
pub const LOSS_PLOT: &str = "loss_lr.png";
/// Train / validation top-1 per epoch.
pub const ACCURACY_PLOT: &str = "accuracy.png";
/// 2-D PCA of the test embeddings.
pub const PCA_PLOT: &str = "pca.png";
/// Every plot a run may have, in the order the report shows them.
pub const PLOT_FILES: [&str; 3] = [LOSS_PLOT, ACCURACY_PLOT, PCA_PLOT];
/// Where Debian's `fonts-dejavu-core` puts DejaVu Sans.
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// The font family name the font is registered under.
const FAMILY: &str = "sans-serif";

/// Size and font of the plots.
#[derive(Clone, Debug, PartialEq)]
pub struct PlotOptions {
    /// TrueType font for all text; `None` draws no text.
    pub font_path: Option<PathBuf>,
    pub width: u32,
    /// Height of one row of panels (the loss plot has one row per stage).
    pub height: u32,
    /// At most this many points enter the PCA scatter (an evenly strided subset).
    pub max_pca_points: usize,
}

impl Default for PlotOptions {
    fn default() -> Self {
        Self {
            font_path: Some(PathBuf::from(DEFAULT_FONT)),
            width: 1000,
            height: 400,
            max_pca_points: 5000,
        }
    }
}

/// Font files registered so far (registration is global in `plotters`).
static REGISTERED_FONTS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Registers the font of `options` once; `false` (with a warning) when there is none usable.
fn text_enabled(options: &PlotOptions) -> bool {
    let Some(path) = &options.font_path else {
        return false;
    };
    let mut registered = REGISTERED_FONTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if registered.last() == Some(path) {
        return true;
    }
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!(
                "font {} unreadable ({e}); drawing plots without text (install fonts-dejavu-core)",
                path.display()
            );
            return false;
        }
    };
    // plotters keeps a `&'static [u8]`: leaked once per font file, a few hundred KiB.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    match plotters::style::register_font(FAMILY, FontStyle::Normal, bytes) {
        Ok(()) => {
            registered.push(path.clone());
            true
        }
        Err(_) => {
            tracing::warn!(
                "font {} is not a TrueType font plotters can read; drawing plots without text",
                path.display()
            );
            false
        }
    }
}

/// Draws a PNG atomically (the project's one writer: temporary file beside `path`, renamed
/// over it), so a crash never leaves a torn plot.
fn render_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> Result<(), String>,
) -> Result<(), TrainError> {
    crate::files::write_atomic_with(path, |tmp| {
        // The temporary keeps the `.png` extension: the bitmap backend picks the encoder by it.
        let root = BitMapBackend::new(tmp, size).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| e.to_string())
            .and_then(|()| draw(&root))
            .and_then(|()| root.present().map_err(|e| e.to_string()))
            .map_err(|message| std::io::Error::other(format!("drawing plot: {message}")))
    })
}

/// Ten distinguishable colours (matplotlib's tab10), then plotters' 99-colour palette.
fn colour(index: usize) -> RGBColor {
    const TAB10: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    match TAB10.get(index) {
        Some(&(r, g, b)) => RGBColor(r, g, b),
        None => {
            let (r, g, b) = Palette99::pick(index).rgb();
            RGBColor(r, g, b)
        }
    }
}

/// `[min, max]` of `values` widened by 5% (and to a non-empty range for a constant series).
fn padded_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let span = hi - lo;
    let pad = if span > 0.0 {
        0.05 * span
    } else {
        0.5 * lo.abs().max(1e-3)
    };
    (lo - pad, hi + pad)
}

/// The stages present in `records`, in the order they first appear.
fn stages_in(records: &[MetricRecord]) -> Vec<Stage> {
    let mut stages = Vec::new();
    for r in records {
        if !stages.contains(&r.stage) {
            stages.push(r.stage);
        }
    }
    stages
}

/// One line of a panel: legend label, colour, points.
type Series = (String, RGBColor, Vec<(f64, f64)>);

struct Panel<'a> {
    title: String,
    x_desc: &'a str,
    y_desc: &'a str,
    series: Vec<Series>,
    points: bool,
}

fn draw_panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    panel: &Panel<'_>,
    text: bool,
) -> Result<(), String> {
    let (x0, x1) = padded_range(panel.series.iter().flat_map(|s| s.2.iter().map(|p| p.0)));
    let (y0, y1) = padded_range(panel.series.iter().flat_map(|s| s.2.iter().map(|p| p.1)));
    let mut builder = ChartBuilder::on(area);
    builder.margin(12);
    if text {
        builder
            .caption(&panel.title, (FAMILY, 20))
            .x_label_area_size(40)
            .y_label_area_size(60);
    }
    let mut chart = builder
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| e.to_string())?;
    // Steps and epochs are whole numbers: label them so, and leave fractional ticks blank.
    let whole = |v: &f64| {
        if (v - v.round()).abs() < 1e-9 {
            format!("{v:.0}")
        } else {
            String::new()
        }
    };
    let mut mesh = chart.configure_mesh();
    mesh.x_label_formatter(&whole);
    if text {
        mesh.x_desc(panel.x_desc)
            .y_desc(panel.y_desc)
            .label_style((FAMILY, 13))
            .axis_desc_style((FAMILY, 14));
    }
    mesh.draw().map_err(|e| e.to_string())?;
    for (label, colour, data) in &panel.series {
        let colour = *colour;
        let style = colour.stroke_width(2);
        let drawn = chart
            .draw_series(LineSeries::new(data.iter().copied(), style))
            .map_err(|e| e.to_string())?;
        if text {
            drawn.label(label.as_str()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        }
        if panel.points {
            chart
                .draw_series(data.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                .map_err(|e| e.to_string())?;
        }
    }
    if text && panel.series.len() > 1 {
        chart
            .configure_series_labels()
            // Accuracies rise: the lower right corner is the emptiest.
            .position(SeriesLabelPosition::LowerRight)
            .label_font((FAMILY, 13))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Loss (left) and learning rate (right) against the optimizer step, one row per stage with
/// step records. Returns `false` and writes nothing when there are no step records.
pub fn plot_loss_and_lr(
    records: &[MetricRecord],
    path: &Path,
    options: &PlotOptions,
) -> Result<bool, TrainError> {
    let steps: Vec<&MetricRecord> = records
        .iter()
        .filter(|r| r.kind == RecordKind::Step)
        .collect();
    let stages: Vec<Stage> = stages_in(records)
        .into_iter()
        .filter(|s| steps.iter().any(|r| r.stage == *s))
        .collect();
    if stages.is_empty() {
        return Ok(false);
    }
    let text = text_enabled(options);
    let size = (options.width, options.height * stages.len() as u32);
    render_png(path, size, |root| {
        let areas = root.split_evenly((stages.len(), 2));
        for (row, stage) in stages.iter().enumerate() {
            let of_stage: Vec<&&MetricRecord> =
                steps.iter().filter(|r| r.stage == *stage).collect();
            let series = |f: fn(&MetricRecord) -> f64| -> Vec<(f64, f64)> {
                of_stage.iter().map(|r| (r.step as f64, f(r))).collect()
            };
            let loss = Panel {
                title: format!("{stage}: loss"),
                x_desc: "step",
                y_desc: "loss",
                series: vec![("loss".into(), colour(0), series(|r| r.loss))],
                points: false,
            };
            let lr = Panel {
                title: format!("{stage}: learning rate"),
                x_desc: "step",
                y_desc: "lr",
                series: vec![("lr".into(), colour(1), series(|r| r.lr))],
                points: false,
            };
            draw_panel(&areas[2 * row], &loss, text)?;
            draw_panel(&areas[2 * row + 1], &lr, text)?;
        }
        Ok(())
    })?;
    Ok(true)
}

/// Train and validation top-1 (%) per epoch, a line per (stage, split) that has values.
/// Returns `false` and writes nothing when no epoch record carries an accuracy.
pub fn plot_accuracy(
    records: &[MetricRecord],
    path: &Path,
    options: &PlotOptions,
) -> Result<bool, TrainError> {
    let mut series = Vec::new();
    for stage in stages_in(records) {
        type Getter = fn(&MetricRecord) -> Option<f64>;
        let splits: [(&str, Getter); 2] = [("train", |r| r.train_top1), ("val", |r| r.val_top1)];
        for (split, get) in splits {
            let data: Vec<(f64, f64)> = records
                .iter()
                .filter(|r| r.stage == stage && r.kind == RecordKind::Epoch)
                .filter_map(|r| get(r).map(|v| (f64::from(r.epoch) + 1.0, 100.0 * v)))
                .collect();
            if !data.is_empty() {
                let index = series.len();
                series.push((format!("{stage} {split}"), colour(index), data));
            }
        }
    }
    if series.is_empty() {
        return Ok(false);
    }
    let text = text_enabled(options);
    let panel = Panel {
        title: "top-1 accuracy per epoch".into(),
        x_desc: "epoch",
        y_desc: "top-1 (%)",
        series,
        points: true,
    };
    render_png(path, (options.width, options.height + 100), |root| {
        draw_panel(root, &panel, text)
    })?;
    Ok(true)
}

/// Top-1 (%) against training wall time (minutes), a line per method (`(name, points)`, each
/// point `(minutes, top-1 %)`): the accuracy-versus-time figure of `supcon curve`. `split`
/// names the y axis (`test`, or `validation`).
pub fn plot_accuracy_vs_time(
    methods: Vec<(String, Vec<(f64, f64)>)>,
    split: &str,
    path: &Path,
    options: &PlotOptions,
) -> Result<(), TrainError> {
    let y_desc = format!("{split} top-1 (%)");
    let title = format!("{split} top-1 against training wall time");
    plot_lines(
        methods,
        &title,
        "training wall time (min)",
        &y_desc,
        path,
        options,
    )
}

/// Test top-1 (%) against the labeled fraction of the training set (%), a line per kind of
/// row (`(name, points)`, each point `(labeled %, top-1 %)`): the Few labels page's figure.
pub fn plot_label_efficiency(
    rows: Vec<(String, Vec<(f64, f64)>)>,
    path: &Path,
    options: &PlotOptions,
) -> Result<(), TrainError> {
    plot_lines(
        rows,
        "test top-1 against the labeled fraction",
        "labeled images (% of the training split)",
        "test top-1 (%)",
        path,
        options,
    )
}

/// One panel of lines with points, a legend entry per line.
fn plot_lines(
    lines: Vec<(String, Vec<(f64, f64)>)>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    path: &Path,
    options: &PlotOptions,
) -> Result<(), TrainError> {
    let series = lines
        .into_iter()
        .enumerate()
        .map(|(index, (name, data))| (name, colour(index), data))
        .collect();
    let panel = Panel {
        title: title.to_string(),
        x_desc,
        y_desc,
        series,
        points: true,
    };
    let text = text_enabled(options);
    render_png(path, (options.width, options.height + 200), |root| {
        draw_panel(root, &panel, text)
    })
}

/// A square grid of values (`grid[row][column]`, rows and columns named by `labels`; `None`:
/// not measured, drawn gray), each cell shaded from the smallest value (light) to the largest
/// (dark blue) with its value written in it: the augmentation study's figure.
pub fn plot_heatmap(
    grid: &[Vec<Option<f64>>],
    labels: &[String],
    title: &str,
    path: &Path,
    options: &PlotOptions,
) -> Result<(), TrainError> {
    const CELL: i32 = 84;
    const LEFT: i32 = 110;
    const TOP: i32 = 90;
    let n = labels.len() as i32;
    // Wide enough for the title over a small grid.
    let width = (LEFT + n * CELL + 40).max(9 * title.chars().count() as i32 + 40);
    let size = (width as u32, (TOP + n * CELL + 40) as u32);
    let values = grid.iter().flatten().flatten().copied();
    let (low, high) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let text = text_enabled(options);
    render_png(path, size, |root| {
        let draw = |e: Result<(), DrawingAreaErrorKind<_>>| e.map_err(|e| e.to_string());
        let centred = |size: u32, colour: &'static RGBColor| {
            TextStyle::from((FAMILY, size).into_font())
                .color(colour)
                .pos(plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Center,
                    plotters::style::text_anchor::VPos::Center,
                ))
        };
        if text {
            draw(root.draw(&Text::new(
                title,
                (size.0 as i32 / 2, 24),
                centred(18, &BLACK),
            )))?;
        }
        for (r, row) in grid.iter().enumerate() {
            for (c, value) in row.iter().enumerate() {
                let (x, y) = (LEFT + c as i32 * CELL, TOP + r as i32 * CELL);
                let shade = value.map(|v| {
                    heat(if high > low {
                        (v - low) / (high - low)
                    } else {
                        0.5
                    })
                });
                let fill = shade.unwrap_or(RGBColor(200, 200, 200));
                draw(root.draw(&Rectangle::new(
                    [(x, y), (x + CELL, y + CELL)],
                    fill.filled(),
                )))?;
                draw(root.draw(&Rectangle::new(
                    [(x, y), (x + CELL, y + CELL)],
                    WHITE.stroke_width(2),
                )))?;
                if let (true, Some(v)) = (text, value) {
                    let ink: &'static RGBColor = if (v - low) > 0.6 * (high - low) {
                        &WHITE
                    } else {
                        &BLACK
                    };
                    let centre = (x + CELL / 2, y + CELL / 2);
                    draw(root.draw(&Text::new(format!("{v:.1}"), centre, centred(16, ink))))?;
                }
            }
        }
        if text {
            for (i, label) in labels.iter().enumerate() {
                let middle = i as i32 * CELL + CELL / 2;
                let style = centred(15, &BLACK);
                draw(root.draw(&Text::new(
                    label.as_str(),
                    (LEFT + middle, TOP - 16),
                    style.clone(),
                )))?;
                draw(root.draw(&Text::new(label.as_str(), (LEFT / 2, TOP + middle), style)))?;
            }
        }
        Ok(())
    })
}

/// Light to dark blue for `t` in [0, 1] (matplotlib's Blues, end to end).
fn heat(t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0);
    let mix = |a: u8, b: u8| (f64::from(a) + (f64::from(b) - f64::from(a)) * t).round() as u8;
    RGBColor(mix(222, 8), mix(235, 48), mix(247, 107))
}

/// Scatter of the 2-D PCA of `embeddings`, one colour per class (legend with `class_names`
/// when given, else class numbers).
pub fn plot_embedding_pca(
    embeddings: ArrayView2<'_, f32>,
    labels: &[i64],
    class_names: &[String],
    path: &Path,
    options: &PlotOptions,
) -> Result<(), TrainError> {
    if embeddings.nrows() != labels.len() {
        return Err(TrainError::Shape(format!(
            "PCA plot: {} embeddings but {} labels",
            embeddings.nrows(),
            labels.len()
        )));
    }
    let stride = embeddings
        .nrows()
        .div_ceil(options.max_pca_points.max(1))
        .max(1);
    let rows: Vec<usize> = (0..embeddings.nrows()).step_by(stride).collect();
    let subset = embeddings.select(Axis(0), &rows);
    let labels: Vec<i64> = rows.iter().map(|&i| labels[i]).collect();
    let (projection, explained) = crate::eval::geometry::pca_2d(subset.view())?;
    let mut classes: Vec<i64> = labels.clone();
    classes.sort_unstable();
    classes.dedup();
    let text = text_enabled(options);
    let size = (options.width, options.width * 4 / 5);
    render_png(path, size, |root| {
        let (x0, x1) = padded_range(projection.column(0).iter().map(|&v| f64::from(v)));
        let (y0, y1) = padded_range(projection.column(1).iter().map(|&v| f64::from(v)));
        let mut builder = ChartBuilder::on(root);
        builder.margin(12);
        if text {
            builder
                .caption(
                    format!(
                        "test embeddings, PCA (PC1 {:.1}%, PC2 {:.1}% of variance)",
                        100.0 * explained[0],
                        100.0 * explained[1]
                    ),
                    (FAMILY, 20),
                )
                .x_label_area_size(40)
                .y_label_area_size(60);
        }
        let mut chart = builder
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| e.to_string())?;
        let mut mesh = chart.configure_mesh();
        if text {
            mesh.x_desc("PC1").y_desc("PC2").label_style((FAMILY, 13));
        }
        mesh.draw().map_err(|e| e.to_string())?;
        for (index, &class) in classes.iter().enumerate() {
            let c = colour(index);
            let points = labels
                .iter()
                .zip(projection.rows())
                .filter(|(&l, _)| l == class)
                .map(|(_, p)| {
                    Circle::new((f64::from(p[0]), f64::from(p[1])), 2, c.mix(0.6).filled())
                });
            let drawn = chart.draw_series(points).map_err(|e| e.to_string())?;
            if text {
                let name = usize::try_from(class)
                    .ok()
                    .and_then(|i| class_names.get(i).cloned())
                    .unwrap_or_else(|| class.to_string());
                drawn
                    .label(name)
                    .legend(move |(x, y)| Circle::new((x + 6, y), 4, c.filled()));
            }
        }
        if text {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .label_font((FAMILY, 13))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

/// Test embeddings for the PCA plot.
pub struct EmbeddingsForPlot<'a> {
    pub embeddings: ArrayView2<'a, f32>,
    pub labels: &'a [i64],
    pub class_names: &'a [String],
}

/// Writes every plot the inputs allow into `run_dir/plots/`; returns the files written.
pub fn write_run_plots(
    run_dir: &Path,
    records: &[MetricRecord],
    embeddings: Option<EmbeddingsForPlot<'_>>,
    options: &PlotOptions,
) -> Result<Vec<PathBuf>, TrainError> {
    let dir = run_dir.join(PLOTS_DIR);
    let mut written = Vec::new();
    let loss = dir.join(LOSS_PLOT);
    if plot_loss_and_lr(records, &loss, options)? {
        written.push(loss);
    }
    let accuracy = dir.join(ACCURACY_PLOT);
    if plot_accuracy(records, &accuracy, options)? {
        written.push(accuracy);
    }
    if let Some(e) = embeddings {
        let pca = dir.join(PCA_PLOT);
        plot_embedding_pca(e.embeddings, e.labels, e.class_names, &pca, options)?;
        written.push(pca);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_ranges_are_never_empty() {
        assert_eq!(padded_range([2.0, 2.0].into_iter()), (1.0, 3.0));
        assert_eq!(padded_range(std::iter::empty()), (0.0, 1.0));
        let (lo, hi) = padded_range([0.0, 10.0, f64::NAN].into_iter());
        assert!((lo + 0.5).abs() < 1e-12 && (hi - 10.5).abs() < 1e-12);
    }
}
