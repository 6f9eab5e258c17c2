//! Least-squares trend of a metric over time and its value one hour ahead
//! (pure, no I/O).

use serde::Serialize;

/// Slope and extrapolation of a metric series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Trend {
    /// Change of the metric per hour.
    pub slope_per_hour: f64,
    /// Fitted value at the latest point.
    pub fitted_now: f64,
    /// Fitted value `ahead_ms` after the latest point.
    pub predicted: f64,
    pub points: usize,
}

/// Ordinary least squares over `(time_ms, value)` points; `None` with
/// fewer than 3 points or all at one time.
pub fn fit(points: &[(i64, f64)], ahead_ms: i64) -> Option<Trend> {
    if points.len() < 3 {
        return None;
    }
    let t0 = points[0].0;
    let hours = |t: i64| (t - t0) as f64 / 3_600_000.0;
    let n = points.len() as f64;
    let mx = points.iter().map(|(t, _)| hours(*t)).sum::<f64>() / n;
    let my = points.iter().map(|(_, v)| v).sum::<f64>() / n;
    let (mut sxx, mut sxy) = (0.0, 0.0);
    for (t, v) in points {
        let dx = hours(*t) - mx;
        sxx += dx * dx;
        sxy += dx * (v - my);
    }
    if sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let last = points.iter().map(|(t, _)| *t).max().unwrap_or(t0);
    Some(Trend {
        slope_per_hour: slope,
        fitted_now: intercept + slope * hours(last),
        predicted: intercept + slope * hours(last + ahead_ms),
        points: points.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::{fixture, floats};

    #[test]
    fn slope_and_prediction_equal_scipy_linregress() {
        let f = fixture("lag_trend.json");
        let hours = floats(&f["trend_hours"]);
        let values = floats(&f["trend_values"]);
        // Times in ms from the fixture's hour offsets (sub-ms rounding is
        // far below the tolerance).
        let points: Vec<(i64, f64)> = hours
            .iter()
            .zip(&values)
            .map(|(h, v)| ((h * 3_600_000.0).round() as i64, *v))
            .collect();
        let t = fit(&points, 3_600_000).unwrap();
        let e = &f["trend_expected"];
        let slope = e["slope_per_hour"].as_f64().unwrap();
        let predicted = e["predicted_1h_ahead"].as_f64().unwrap();
        assert!(
            (t.slope_per_hour - slope).abs() < 1e-7,
            "{} vs {slope}",
            t.slope_per_hour
        );
        assert!((t.predicted - predicted).abs() < 1e-7, "{} vs {predicted}", t.predicted);
    }

    #[test]
    fn too_few_points_give_no_trend() {
        assert!(fit(&[(0, 1.0), (1, 1.0)], 1).is_none());
        assert!(fit(&[(5, 1.0), (5, 2.0), (5, 3.0)], 1).is_none());
    }
}
