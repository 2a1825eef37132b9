//! Draws the size sweep written by the `peers` binary: write throughput
//! (msgs/s, log scale) and payload MB/s against the message size, one line
//! per variant with min-max error bars, and the machine, date, rounds and
//! load in the caption.
//!
//! `plot [CSV] [PNG]` (defaults `throughput.csv`, `throughput.png`).
//!
//! Text is rendered by plotters' pure-Rust `ab_glyph` backend (no
//! fontconfig or freetype) from a TTF read at run time: DejaVu Sans from
//! Debian's `fonts-dejavu-core` package by default, or the file named by
//! `MQSTORE_PLOT_FONT`.

use mqstore_peers::csv::{Point, Sweep};
use mqstore_peers::stats::short;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::process::ExitCode;

const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const FONT: &str = "sans-serif";
const SIZE: (u32, u32) = (1500, 700);
/// Horizontal factor between neighbouring variants at one size.
const DODGE: f64 = 1.04;

/// Line colour and width per variant: mqstore stands out.
fn style_of(variant: &str) -> (RGBColor, u32) {
    match variant {
        "mqstore" => (RGBColor(214, 39, 40), 3),
        "mqstore-send" => (RGBColor(255, 127, 14), 2),
        "raw-file" => (RGBColor(31, 119, 180), 2),
        "raw-mmap" => (RGBColor(44, 160, 44), 2),
        "raft-engine" => (RGBColor(148, 103, 189), 2),
        _ => (RGBColor(90, 90, 90), 2),
    }
}

fn size_label(bytes: f64) -> String {
    let b = bytes.round() as u64;
    if b >= 1024 && b.is_multiple_of(1024) {
        format!("{} KiB", b / 1024)
    } else {
        format!("{b} B")
    }
}

/// The variants in first-seen order, each with its points sorted by size.
fn series(sweep: &Sweep) -> Vec<(String, Vec<&Point>)> {
    let mut out: Vec<(String, Vec<&Point>)> = Vec::new();
    for p in &sweep.points {
        match out.iter_mut().find(|(v, _)| *v == p.variant) {
            Some((_, pts)) => pts.push(p),
            None => out.push((p.variant.clone(), vec![p])),
        }
    }
    for (_, pts) in &mut out {
        pts.sort_by_key(|p| p.body_bytes);
    }
    out
}

type Panel<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// One panel: `value` picks (median, min, max) from a point.
fn panel(
    area: &Panel<'_>,
    sweep: &Sweep,
    title: &str,
    y_desc: &str,
    log_y: bool,
    value: fn(&Point) -> [f64; 3],
) -> Result<(), Box<dyn std::error::Error>> {
    let sizes: Vec<f64> = {
        let mut s: Vec<f64> = sweep.points.iter().map(|p| p.body_bytes as f64).collect();
        s.sort_by(f64::total_cmp);
        s.dedup();
        s
    };
    let (x_lo, x_hi) = (sizes[0] / 1.3, sizes[sizes.len() - 1] * 1.3);
    let ys: Vec<f64> = sweep.points.iter().flat_map(value).filter(|v| v.is_finite() && *v > 0.0).collect();
    let y_min = ys.iter().copied().fold(f64::INFINITY, f64::min);
    let y_max = ys.iter().copied().fold(0.0, f64::max);
    let mut chart = ChartBuilder::on(area);
    chart.caption(title, (FONT, 22)).margin(12).x_label_area_size(45).y_label_area_size(80);
    let x = (x_lo..x_hi).log_scale().with_key_points(sizes.clone());
    let all = series(sweep);
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc("message body size")
                .y_desc(y_desc)
                .x_label_formatter(&|v| size_label(*v))
                .y_label_formatter(&|v| if log_y { short(*v) } else { format!("{v:.0}") })
                .label_style((FONT, 15))
                .axis_desc_style((FONT, 17))
                .light_line_style(RGBColor(235, 235, 235))
                .draw()?;
            for (k, (variant, pts)) in all.iter().enumerate() {
                let (color, width) = style_of(variant);
                // Dodge: each variant's points sit slightly left or right of
                // the true size so the error bars of different variants do
                // not hide each other (the axis is logarithmic, so a factor).
                let shift = DODGE.powf(k as f64 - (all.len() as f64 - 1.0) / 2.0);
                let at = |p: &Point| p.body_bytes as f64 * shift;
                let line = ShapeStyle::from(&color).stroke_width(width);
                chart
                    .draw_series(LineSeries::new(pts.iter().map(|p| (at(p), value(p)[0])), line))?
                    .label(variant.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], line));
                chart.draw_series(pts.iter().map(|p| Circle::new((at(p), value(p)[0]), 4, color.filled())))?;
                chart.draw_series(pts.iter().map(|p| {
                    let [m, lo, hi] = value(p);
                    ErrorBar::new_vertical(at(p), lo, m, hi, color.stroke_width(1), 8)
                }))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .label_font((FONT, 15))
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(180, 180, 180))
                .draw()?;
        }};
    }
    if log_y {
        draw!(chart.build_cartesian_2d(x, (y_min / 1.5..y_max * 3.0).log_scale())?);
    } else {
        draw!(chart.build_cartesian_2d(x, 0.0..y_max * 1.25)?);
    }
    Ok(())
}

fn caption(sweep: &Sweep) -> Vec<String> {
    let get = |k: &str| sweep.meta.get(k).map_or("?", String::as_str);
    let ok = if sweep.points.iter().all(|p| p.ok) {
        "every run read back and verified"
    } else {
        "SOME RUNS FAILED READ-BACK"
    };
    vec![
        format!(
            "{} MB of payload per run, one producer, one topic/queue, one flush at the end inside the time; median of {} interleaved rounds, bars = min-max; {ok}.",
            get("volume_mb"),
            get("rounds")
        ),
        format!(
            "Machine: {}. Date: {}. 1-min load average: {} (above the CPU count = other jobs competing).",
            get("machine"),
            get("date"),
            get("load")
        ),
    ]
}

fn draw(sweep: &Sweep, png: &str) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::new(png, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        "mqstore vs raw baselines vs raft-engine 0.4.2: write throughput by message size",
        (FONT, 26).into_font().color(&BLACK),
    )?;
    let (plots, text) = root.split_vertically(SIZE.1 - 110);
    let halves = plots.split_evenly((1, 2));
    panel(&halves[0], sweep, "messages per second (log scale)", "msgs/s", true, |p| p.msgs_s)?;
    panel(&halves[1], sweep, "payload MB/s (10^6 bytes)", "MB/s", false, |p| p.mb_s)?;
    for (i, line) in caption(sweep).iter().enumerate() {
        text.draw(&Text::new(line.as_str(), (20, 18 + 26 * i as i32), (FONT, 16).into_font().color(&BLACK)))?;
    }
    root.present()?;
    Ok(())
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let csv = args.next().unwrap_or_else(|| "throughput.csv".to_string());
    let png = args.next().unwrap_or_else(|| "throughput.png".to_string());
    let font_path = std::env::var("MQSTORE_PLOT_FONT").unwrap_or_else(|_| DEFAULT_FONT.to_string());
    let font = match std::fs::read(&font_path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("cannot read the font {font_path}: {e} (install fonts-dejavu-core or set MQSTORE_PLOT_FONT)");
            return ExitCode::FAILURE;
        }
    };
    // plotters keeps registered fonts for the life of the process.
    if register_font(FONT, FontStyle::Normal, Box::leak(font.into_boxed_slice())).is_err() {
        eprintln!("{font_path} is not a usable TrueType font");
        return ExitCode::FAILURE;
    }
    let sweep = match std::fs::read_to_string(&csv).map_err(|e| e.to_string()).and_then(|t| Sweep::parse(&t)) {
        Ok(s) if !s.points.is_empty() => s,
        Ok(_) => {
            eprintln!("{csv}: no data lines");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("{csv}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match draw(&sweep, &png) {
        Ok(()) => {
            println!("wrote {png} ({} points)", sweep.points.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("drawing {png}: {e}");
            ExitCode::FAILURE
        }
    }
}
