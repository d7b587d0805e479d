//! Line charts drawn on the server as SVG: no script, nothing fetched.
//!
//! A chart carries its points in `data-points` (`[[ms, value], ...]`, JSON), so a test
//! or a script can read exactly what is drawn.

use maud::{Markup, html};

use crate::history::Point;

const WIDTH: f64 = 560.0;
const HEIGHT: f64 = 140.0;
const LEFT: f64 = 56.0;
const BOTTOM: f64 = 18.0;

/// A value as a chart's axis shows it: `1.2k`, `3.4M`, or a ratio as a percentage.
pub fn short(value: f64, unit: &str) -> String {
    if unit == "%" {
        return format!("{:.0}%", value * 100.0);
    }
    let (scaled, suffix) = match value.abs() {
        v if v >= 1e9 => (value / 1e9, "G"),
        v if v >= 1e6 => (value / 1e6, "M"),
        v if v >= 1e3 => (value / 1e3, "k"),
        _ => (value, ""),
    };
    if scaled.fract() == 0.0 || scaled.abs() >= 100.0 {
        format!("{scaled:.0}{suffix}{unit}")
    } else {
        format!("{scaled:.1}{suffix}{unit}")
    }
}

/// A span of time as people read it: `35s`, `12min`, `3h`.
pub fn duration(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}min", s / 60),
        s => format!("{}h", s / 3600),
    }
}

/// A chart of `points` titled `title`; `unit` follows each value (`%` shows a ratio as a
/// percentage).
pub fn line(id: &str, title: &str, points: &[Point], unit: &str) -> Markup {
    let data = serde_json::to_string(
        &points
            .iter()
            .map(|(t, v)| (*t, if v.is_finite() { *v } else { 0.0 }))
            .collect::<Vec<_>>(),
    )
    .unwrap_or_else(|_| "[]".into());
    let max = points
        .iter()
        .map(|p| p.1)
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let max = if unit == "%" || max <= 0.0 { 1.0 } else { max };
    let (first, last) = match (points.first(), points.last()) {
        (Some(a), Some(b)) => (a.0, b.0),
        _ => (0, 0),
    };
    let span = (last - first).max(1) as f64;
    let x = |t: i64| LEFT + (t - first) as f64 / span * (WIDTH - LEFT - 4.0);
    let y = |v: f64| 4.0 + (1.0 - (v / max).clamp(0.0, 1.0)) * (HEIGHT - BOTTOM - 8.0);
    let path: String = points
        .iter()
        .map(|(t, v)| {
            format!(
                "{:.1},{:.1}",
                x(*t),
                y(if v.is_finite() { *v } else { 0.0 })
            )
        })
        .collect::<Vec<_>>()
        .join(" ");
    let since = duration((last - first) / 1000);
    let now = points.last().map(|p| short(p.1, unit));
    html! {
        figure.chart {
            figcaption {
                (title)
                @if let Some(now) = &now { span.now { " now " (now) } }
            }
            svg id=(id) data-points=(data) viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) width=(WIDTH) height=(HEIGHT) role="img" aria-label=(title) {
                line.axis x1=(LEFT) y1=(HEIGHT - BOTTOM) x2=(WIDTH) y2=(HEIGHT - BOTTOM) {}
                line.axis x1=(LEFT) y1="4" x2=(LEFT) y2=(HEIGHT - BOTTOM) {}
                text x=(LEFT - 4.0) y="12" text-anchor="end" { (short(max, unit)) }
                text x=(LEFT - 4.0) y=(HEIGHT - BOTTOM) text-anchor="end" { (short(0.0, unit)) }
                @if points.len() < 2 {
                    text x=(WIDTH / 2.0) y=(HEIGHT / 2.0) text-anchor="middle" class="empty" { "sampling: a point every 5 s" }
                } @else {
                    text x=(LEFT) y=(HEIGHT - 4.0) { (since) " ago" }
                    text x=(WIDTH) y=(HEIGHT - 4.0) text-anchor="end" { "now" }
                    polyline points=(path) {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values() {
        assert_eq!(short(0.0, ""), "0");
        assert_eq!(short(1500.0, " B/s"), "1.5k B/s");
        assert_eq!(short(2_000_000.0, ""), "2M");
        assert_eq!(short(0.5, "%"), "50%");
    }

    #[test]
    fn chart_carries_its_points() {
        let markup = line("c", "lag", &[(1000, 1.0), (6000, 5.0)], "").into_string();
        assert!(
            markup.contains(r#"data-points="[[1000,1.0],[6000,5.0]]""#),
            "{markup}"
        );
        assert!(markup.contains("<polyline"));
        assert!(markup.contains(">5s ago<"), "{markup}");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(35), "35s");
        assert_eq!(duration(600), "10min");
        assert_eq!(duration(3 * 3600), "3h");
    }
}
