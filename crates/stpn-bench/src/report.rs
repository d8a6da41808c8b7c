//! `stpn-bench report art RUN_DIR...`: the table and plots of a sweep, from the run folders'
//! `config.json`, `metrics.csv` and `summary.json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use plotters::prelude::*;

use crate::art::{ArtConfig, Summary};
use crate::run_dir::read_json;

/// One finished run.
struct Run {
    summary: Summary,
    /// `(epoch, validation accuracy)` per epoch.
    curve: Vec<(usize, f64)>,
}

fn label(summary: &Summary) -> String {
    let model = serde_json::to_value(summary.model).unwrap();
    let scalar = if summary.per_synapse { "" } else { " scalar" };
    let equations = serde_json::to_value(summary.equations).unwrap();
    format!(
        "{}{scalar} h{} ({})",
        model.as_str().unwrap(),
        summary.hidden_size,
        equations.as_str().unwrap()
    )
}

fn load_run(folder: &Path) -> Result<Run> {
    let _: ArtConfig = read_json(&folder.join("config.json"))?;
    let summary: Summary = read_json(&folder.join("summary.json")).with_context(|| {
        format!(
            "{} has no summary.json: is the run finished?",
            folder.display()
        )
    })?;
    let metrics = std::fs::read_to_string(folder.join("metrics.csv"))
        .with_context(|| format!("cannot read {}/metrics.csv", folder.display()))?;
    let mut curve = Vec::new();
    for line in metrics.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        let (Some(epoch), Some(accuracy)) = (fields.first(), fields.get(3)) else {
            bail!("{}/metrics.csv is malformed: {line}", folder.display());
        };
        curve.push((epoch.parse()?, accuracy.parse()?));
    }
    Ok(Run { summary, curve })
}

fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let variance = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, variance.sqrt())
}

fn cell(values: &[f64], digits: usize) -> String {
    let (mean, std) = mean_std(values);
    if values.len() > 1 {
        format!("{mean:.digits$} ± {std:.digits$}")
    } else {
        format!("{mean:.digits$}")
    }
}

/// Writes `art.md`, `art_accuracy.svg` and `art_energy.svg` into `out` and returns the table.
pub fn report_art(folders: &[PathBuf], out: &Path) -> Result<String> {
    let mut groups: BTreeMap<String, Vec<Run>> = BTreeMap::new();
    for folder in folders {
        let run = load_run(folder)?;
        groups.entry(label(&run.summary)).or_default().push(run);
    }
    if groups.is_empty() {
        bail!("no runs given");
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;

    let mut table = String::new();
    writeln!(
        table,
        "| model | params | seeds | epochs | final val acc | best val acc | test acc (last model) | test acc (best model) | test energy |"
    )?;
    writeln!(table, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for (name, runs) in &groups {
        let pick =
            |f: fn(&Summary) -> f64| runs.iter().map(|run| f(&run.summary)).collect::<Vec<_>>();
        writeln!(
            table,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |",
            runs[0].summary.params,
            runs.len(),
            runs.iter().map(|run| run.summary.epochs).min().unwrap_or(0),
            cell(&pick(|s| s.final_val_acc), 3),
            cell(&pick(|s| s.best_val_acc), 3),
            cell(&pick(|s| s.test_acc), 3),
            cell(&pick(|s| s.best_model_test_acc), 3),
            cell(&pick(|s| s.test_energy), 2),
        )?;
    }
    std::fs::write(out.join("art.md"), &table)?;
    plot_curves(&groups, &out.join("art_accuracy.svg"))?;
    plot_energy(&groups, &out.join("art_energy.svg"))?;
    Ok(table)
}

fn color(index: usize) -> RGBColor {
    const PALETTE: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    PALETTE[index % PALETTE.len()]
}

/// Validation accuracy per epoch, mean over the seeds of each model.
fn plot_curves(groups: &BTreeMap<String, Vec<Run>>, path: &Path) -> Result<()> {
    let epochs = groups
        .values()
        .flat_map(|runs| runs.iter().map(|run| run.curve.len()))
        .max()
        .unwrap_or(1)
        .max(2);
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Associative retrieval: validation accuracy (mean over seeds)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(1f64..epochs as f64, 0f64..1f64)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("validation accuracy")
        .draw()?;
    for (index, (name, runs)) in groups.iter().enumerate() {
        let length = runs.iter().map(|run| run.curve.len()).min().unwrap_or(0);
        let mean: Vec<(f64, f64)> = (0..length)
            .map(|epoch| {
                let values: Vec<f64> = runs.iter().map(|run| run.curve[epoch].1).collect();
                (run_epoch(runs, epoch) as f64, mean_std(&values).0)
            })
            .collect();
        let style = color(index).stroke_width(2);
        chart
            .draw_series(LineSeries::new(mean, style))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn run_epoch(runs: &[Run], index: usize) -> usize {
    runs[0].curve[index].0
}

/// Test energy against test accuracy, one point per run.
fn plot_energy(groups: &BTreeMap<String, Vec<Run>>, path: &Path) -> Result<()> {
    let energies = groups.values().flatten().map(|run| run.summary.test_energy);
    let max_energy = energies.fold(1f64, f64::max) * 1.1;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Associative retrieval: energy vs accuracy (test set, last model)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..1f64, 0f64..max_energy)?;
    chart
        .configure_mesh()
        .x_desc("test accuracy")
        .y_desc("energy per step (sum over units)")
        .draw()?;
    for (index, (name, runs)) in groups.iter().enumerate() {
        let style = color(index).filled();
        chart
            .draw_series(
                runs.iter().map(|run| {
                    Circle::new((run.summary.test_acc, run.summary.test_energy), 5, style)
                }),
            )?
            .label(name)
            .legend(move |(x, y)| Circle::new((x + 10, y), 5, style));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
