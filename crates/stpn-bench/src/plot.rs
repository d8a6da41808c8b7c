//! Plots that know no experiment: lines of points with a legend, and the palette every plot of
//! the reports shares. SVG through plotters.

use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;

/// The colour of the `index`-th series.
pub fn color(index: usize) -> RGBColor {
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

/// At most about `PLOTTED_POINTS` of a curve's points, evenly spaced, and always its last: a
/// 900-pixel plot shows no more, and an RL run logs a row per iteration (125 000 for Pong's
/// DeepMind setting), which would make the SVG megabytes.
fn thinned(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    const PLOTTED_POINTS: usize = 2_000;
    let stride = points.len().div_ceil(PLOTTED_POINTS).max(1);
    let mut kept: Vec<(f64, f64)> = points.iter().copied().step_by(stride).collect();
    if !points.is_empty() && (points.len() - 1) % stride != 0 {
        kept.extend(points.last().copied());
    }
    kept
}

/// A tick label of the x axis: whole numbers without decimals, millions and thousands with `M`
/// and `k` (`2.5M`, not `2500000.0`).
fn axis_number(value: f64) -> String {
    let magnitude = value.abs();
    let (scaled, suffix) = if magnitude >= 1e6 {
        (value / 1e6, "M")
    } else if magnitude >= 1e4 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    let text = if scaled.fract() == 0.0 {
        format!("{scaled:.0}")
    } else {
        let text = format!("{scaled:.2}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    format!("{text}{suffix}")
}

/// Lines of `(x, y)` points, one per named series, with a legend.
pub fn plot_lines(
    series: &[(String, Vec<(f64, f64)>)],
    title: &str,
    (x_desc, y_desc): (&str, &str),
    y_range: std::ops::Range<f64>,
    path: &Path,
) -> Result<()> {
    let x_max = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|point| point.0))
        .fold(2f64, f64::max);
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..x_max, y_range)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|x| axis_number(*x))
        .draw()?;
    for (index, (name, points)) in series.iter().enumerate() {
        let style = color(index).stroke_width(2);
        chart
            .draw_series(LineSeries::new(thinned(points), style))?
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

#[cfg(test)]
mod tests {
    use super::{axis_number, thinned};

    #[test]
    fn axis_numbers_are_short() {
        assert_eq!(axis_number(0.0), "0");
        assert_eq!(axis_number(200.0), "200");
        assert_eq!(axis_number(2.5), "2.5");
        assert_eq!(axis_number(20_000.0), "20k");
        assert_eq!(axis_number(2_000_000.0), "2M");
        assert_eq!(axis_number(12_500_000.0), "12.5M");
        assert_eq!(axis_number(-3_000_000.0), "-3M");
    }

    #[test]
    fn long_curves_are_thinned_evenly_and_keep_their_ends() {
        let curve: Vec<(f64, f64)> = (0..125_001).map(|i| (i as f64, (i % 7) as f64)).collect();
        let kept = thinned(&curve);
        assert!(kept.len() <= 2_002, "{} points kept", kept.len());
        assert_eq!(kept.first(), curve.first());
        assert_eq!(kept.last(), curve.last());
        assert!(kept.windows(2).all(|pair| pair[0].0 < pair[1].0));
        let short: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 0.0)).collect();
        assert_eq!(thinned(&short), short);
        assert!(thinned(&[]).is_empty());
    }
}
