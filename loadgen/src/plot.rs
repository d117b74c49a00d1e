//! SVG plots of fan-out runs: latency percentiles against requestors and against rate, one
//! panel per load, one colour per system and one marker per percentile, both axes
//! logarithmic.
//!
//! Only plotters' SVG backend, without its font support: the layout uses plotters' crude text
//! size estimate and the viewer draws the text with its own fonts, so building needs no
//! fontconfig or freetype.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::summary::RunSummary;

/// Width of a plot, pixels.
const WIDTH: u32 = 1100;
/// Height of one panel, pixels.
const PANEL_HEIGHT: u32 = 460;
/// Height of the plot's title, pixels.
const TITLE_HEIGHT: u32 = 50;
/// Width of the legend beside each panel, pixels.
const LEGEND_WIDTH: u32 = 150;

/// A latency percentile of [`RunSummary`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pct {
    P50,
    P99,
    P999,
}

impl Pct {
    const ALL: [Self; 3] = [Self::P50, Self::P99, Self::P999];

    fn name(self) -> &'static str {
        match self {
            Self::P50 => "p50",
            Self::P99 => "p99",
            Self::P999 => "p99.9",
        }
    }

    fn of(self, run: &RunSummary) -> f64 {
        match self {
            Self::P50 => run.p50_us,
            Self::P99 => run.p99_us,
            Self::P999 => run.p999_us,
        }
    }

    fn stroke(self) -> u32 {
        match self {
            Self::P50 => 1,
            Self::P99 | Self::P999 => 2,
        }
    }
}

/// One line: a system's percentile across the panel's runs.
struct Series {
    system: String,
    pct: Pct,
    colour: RGBColor,
    /// (x, latency µs), sorted by x; only positive, finite values (log axes).
    points: Vec<(f64, f64)>,
}

/// One panel: the runs at one mode and one fixed rate (or requestor count).
struct Panel {
    caption: String,
    series: Vec<Series>,
}

/// Which run field is the x axis.
#[derive(Clone, Copy)]
enum Axis {
    Requestors,
    Rate,
}

impl Axis {
    fn x(self, run: &RunSummary) -> f64 {
        match self {
            Self::Requestors => run.requestors as f64,
            Self::Rate => run.rate,
        }
    }

    /// The field held fixed in a panel, for its caption.
    fn fixed(self, run: &RunSummary) -> String {
        match self {
            Self::Requestors => format!("rate {} changes/s", count(run.rate)),
            Self::Rate => format!("{} requestors", count(run.requestors as f64)),
        }
    }

    fn description(self) -> &'static str {
        match self {
            Self::Requestors => "requestors N (log scale)",
            Self::Rate => "intended rate, changes/s (log scale)",
        }
    }
}

/// Writes to `path` an SVG of the p50, p99 and p99.9 latencies of every system against the
/// number of requestors, one panel per mode and rate.
pub(crate) fn latency_vs_requestors(runs: &[RunSummary], path: &Path) -> Result<(), String> {
    plot(
        runs,
        Axis::Requestors,
        "Change-to-delivery latency against requestors",
        path,
    )
}

/// Writes to `path` an SVG of the p50, p99 and p99.9 latencies of every system against the
/// intended change rate, one panel per mode and requestor count.
pub(crate) fn latency_vs_rate(runs: &[RunSummary], path: &Path) -> Result<(), String> {
    plot(
        runs,
        Axis::Rate,
        "Change-to-delivery latency against change rate",
        path,
    )
}

/// Systems in plot order: lqd and the baselines first, then any other by name.
fn system_rank(system: &str) -> (usize, &str) {
    let rank = ["lqd", "lqd-tls", "raw", "redis", "nats"]
        .iter()
        .position(|s| *s == system)
        .unwrap_or(5);
    (rank, system)
}

/// A fixed colour for the known systems, then the palette by the system's index.
fn colour(system: &str, index: usize) -> RGBColor {
    match system {
        "lqd" => RGBColor(31, 119, 180),
        "raw" => RGBColor(44, 160, 44),
        "redis" => RGBColor(214, 39, 40),
        "lqd-tls" => RGBColor(148, 103, 189),
        "nats" => RGBColor(255, 127, 14),
        _ => {
            let c = Palette99::pick(index).to_rgba();
            RGBColor(c.0, c.1, c.2)
        }
    }
}

/// The panels of a plot against `axis`: one per (mode, the other field), in the order first
/// seen; in each, one series per system and percentile.
fn panels(runs: &[RunSummary], axis: Axis) -> Vec<Panel> {
    let mut keys: Vec<(&str, String)> = Vec::new();
    for r in runs {
        let key = (r.mode.as_str(), axis.fixed(r));
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    let mut systems: Vec<&str> = runs.iter().map(|r| r.system.as_str()).collect();
    systems.sort_by_key(|s| system_rank(s));
    systems.dedup();
    keys.into_iter()
        .map(|(mode, fixed)| {
            let in_panel: Vec<&RunSummary> = runs
                .iter()
                .filter(|r| r.mode == mode && axis.fixed(r) == fixed)
                .collect();
            let mut series = Vec::new();
            for (index, system) in systems.iter().enumerate() {
                for pct in Pct::ALL {
                    let mut points: Vec<(f64, f64)> = in_panel
                        .iter()
                        .filter(|r| r.system == *system)
                        .map(|r| (axis.x(r), pct.of(r)))
                        .filter(|&(x, y)| x.is_finite() && x > 0.0 && y.is_finite() && y > 0.0)
                        .collect();
                    points.sort_by(|a, b| a.0.total_cmp(&b.0));
                    if !points.is_empty() {
                        series.push(Series {
                            system: (*system).to_owned(),
                            pct,
                            colour: colour(system, index),
                            points,
                        });
                    }
                }
            }
            Panel {
                caption: format!("{mode}, {fixed}"),
                series,
            }
        })
        .filter(|p| !p.series.is_empty())
        .collect()
}

/// A log axis range covering `values` with some room, never empty.
fn log_range(values: impl Iterator<Item = f64>) -> Option<std::ops::Range<f64>> {
    let (lo, hi) = values.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    (lo.is_finite() && lo > 0.0).then(|| lo / 1.5..hi * 1.5)
}

fn plot(runs: &[RunSummary], axis: Axis, title: &str, path: &Path) -> Result<(), String> {
    let panels = panels(runs, axis);
    let all = || {
        panels
            .iter()
            .flat_map(|p| &p.series)
            .flat_map(|s| &s.points)
    };
    let (Some(x_range), Some(y_range)) =
        (log_range(all().map(|p| p.0)), log_range(all().map(|p| p.1)))
    else {
        return Err(format!(
            "nothing to plot in {}: no run with a positive latency",
            path.display()
        ));
    };
    let err = |e: &dyn std::fmt::Display| format!("plotting {}: {e}", path.display());
    let rows = u32::try_from(panels.len()).unwrap_or(u32::MAX);
    let height = TITLE_HEIGHT.saturating_add(PANEL_HEIGHT.saturating_mul(rows));
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let body = root
        .titled(title, ("sans-serif", 30))
        .map_err(|e| err(&e))?;
    for (area, panel) in body.split_evenly((panels.len(), 1)).iter().zip(&panels) {
        draw_panel(area, panel, axis, x_range.clone(), y_range.clone()).map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))
}

fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    panel: &Panel,
    axis: Axis,
    x_range: std::ops::Range<f64>,
    y_range: std::ops::Range<f64>,
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    let area = area.titled(&panel.caption, ("sans-serif", 22))?;
    // The legend goes beside the plot, where it cannot hide a point.
    let (plot_area, legend_area) =
        area.split_horizontally(area.dim_in_pixel().0.saturating_sub(LEGEND_WIDTH));
    let mut chart = ChartBuilder::on(&plot_area)
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(x_range.log_scale(), y_range.log_scale())?;
    chart
        .configure_mesh()
        .x_desc(axis.description())
        .y_desc("latency from the intended change time (log scale)")
        .axis_desc_style(("sans-serif", 17))
        .label_style(("sans-serif", 15))
        .x_label_formatter(&|v| count(*v))
        .y_label_formatter(&|v| latency(*v))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    let font = ("sans-serif", 16).into_font();
    for (row, s) in (0i32..).zip(&panel.series) {
        let line = ShapeStyle::from(s.colour).stroke_width(s.pct.stroke());
        if s.pct == Pct::P999 {
            chart.draw_series(DashedLineSeries::new(s.points.iter().copied(), 8, 5, line))?;
        } else {
            chart.draw_series(LineSeries::new(s.points.iter().copied(), line))?;
        }
        chart.draw_series(s.points.iter().map(|&p| marker(s.pct, p, s.colour)))?;

        let y = 20 + 22 * row;
        let dashes: &[(i32, i32)] = if s.pct == Pct::P999 {
            &[(4, 12), (18, 26)]
        } else {
            &[(4, 26)]
        };
        for &(from, to) in dashes {
            legend_area.draw(&PathElement::new(vec![(from, y), (to, y)], line))?;
        }
        legend_area.draw(&marker(s.pct, (15, y), s.colour))?;
        let name = format!("{} {}", s.system, s.pct.name());
        legend_area.draw_text(&name, &font.color(&BLACK), (34, y - 7))?;
    }
    Ok(())
}

/// The marker of a percentile: a circle for p50, a triangle for p99, a cross for p99.9.
fn marker<DB, C>(pct: Pct, at: C, colour: RGBColor) -> DynElement<'static, DB, C>
where
    DB: DrawingBackend,
    C: Clone + 'static,
{
    match pct {
        Pct::P50 => Circle::new(at, 3, colour.filled()).into_dyn(),
        Pct::P99 => TriangleMarker::new(at, 5, colour.filled()).into_dyn(),
        Pct::P999 => Cross::new(at, 4, colour.stroke_width(2)).into_dyn(),
    }
}

/// A count or rate tick: 500, 2k, 20k, 1.5M.
fn count(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if v >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

/// A latency tick from µs: 50 µs, 2 ms, 1.5 s.
fn latency(us: f64) -> String {
    if us >= 1e6 {
        format!("{} s", trim(us / 1e6))
    } else if us >= 1e3 {
        format!("{} ms", trim(us / 1e3))
    } else {
        format!("{} µs", trim(us))
    }
}

/// At most two decimals, without trailing zeros.
fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(system: &str, requestors: usize, rate: f64) -> RunSummary {
        let base = match system {
            "lqd" => 200.0,
            "raw" => 100.0,
            _ => 300.0,
        } * (requestors as f64).sqrt()
            * (1.0 + rate / 10_000.0);
        RunSummary {
            system: system.to_owned(),
            mode: "active".to_owned(),
            filter: None,
            requestors,
            rate,
            seconds: 10.0,
            changes: 0,
            deliveries: 0,
            deliveries_per_sec: rate * requestors as f64,
            lost: 0,
            duplicated: 0,
            misdelivered: 0,
            p50_us: base,
            p90_us: base * 2.0,
            p99_us: base * 4.0,
            p999_us: base * 10.0,
            max_us: base * 30.0,
            server_cpu_pct: None,
            server_cpu_us_per_change: None,
            loadgen_cpu_pct: 50.0,
            server_peak_rss_kib: None,
        }
    }

    fn synthetic() -> Vec<RunSummary> {
        let mut runs = Vec::new();
        for system in ["redis", "lqd", "raw"] {
            for n in [10, 100, 1_000, 20_000] {
                for rate in [10.0, 1_000.0, 10_000.0] {
                    runs.push(run(system, n, rate));
                }
            }
        }
        runs
    }

    fn out_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("loadgen-plot-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn writes_both_svgs_with_every_series() {
        let runs = synthetic();
        let dir = out_dir();
        let by_n = dir.join("latency_vs_requestors.svg");
        let by_rate = dir.join("latency_vs_rate.svg");
        latency_vs_requestors(&runs, &by_n).expect("plot against N");
        latency_vs_rate(&runs, &by_rate).expect("plot against rate");
        for (path, captions, x_desc) in [
            (
                &by_n,
                vec![
                    "active, rate 10 changes/s",
                    "active, rate 1k changes/s",
                    "active, rate 10k changes/s",
                ],
                "requestors N (log scale)",
            ),
            (
                &by_rate,
                vec![
                    "active, 10 requestors",
                    "active, 1k requestors",
                    "active, 20k requestors",
                ],
                "intended rate, changes/s (log scale)",
            ),
        ] {
            let svg = std::fs::read_to_string(path).expect("the SVG");
            assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
            assert!(svg.trim_end().ends_with("</svg>"));
            // plotters-svg writes each text on a line of its own.
            let texts: Vec<&str> = svg.lines().map(str::trim).collect();
            for system in ["lqd", "raw", "redis"] {
                for pct in ["p50", "p99", "p99.9"] {
                    let name = format!("{system} {pct}");
                    assert!(
                        texts.contains(&name.as_str()),
                        "{name} in {}",
                        path.display()
                    );
                }
            }
            for text in captions.iter().chain([&x_desc]) {
                assert!(texts.contains(text), "{text} in {}", path.display());
            }
            assert!(svg.contains("Change-to-delivery latency against"));
            assert!(texts.contains(&"latency from the intended change time (log scale)"));
            assert!(texts.contains(&"1 ms"), "latency ticks in ms");
        }
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn nothing_to_plot_is_an_error() {
        let path = std::env::temp_dir().join("loadgen-plot-never-written.svg");
        let e = latency_vs_rate(&[], &path).expect_err("no runs");
        assert!(e.contains("nothing to plot"), "{e}");
        let mut zero = run("lqd", 10, 10.0);
        (zero.p50_us, zero.p99_us, zero.p999_us) = (0.0, 0.0, 0.0);
        assert!(latency_vs_requestors(&[zero], &path).is_err());
        assert!(!path.exists());
    }

    #[test]
    fn unwritable_path_is_an_error() {
        let e = latency_vs_requestors(&synthetic(), Path::new("/nonexistent-dir/x.svg"))
            .expect_err("no such directory");
        assert!(e.contains("/nonexistent-dir/x.svg"), "{e}");
    }

    #[test]
    fn ticks() {
        assert_eq!(count(20_000.0), "20k");
        assert_eq!(count(1_500_000.0), "1.5M");
        assert_eq!(count(50.0), "50");
        assert_eq!(latency(50.0), "50 µs");
        assert_eq!(latency(2_000.0), "2 ms");
        assert_eq!(latency(1_500_000.0), "1.5 s");
    }
}
