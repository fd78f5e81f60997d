//! OpenMetrics 1.0 text encoding of gathered families. The `prometheus` crate only writes the
//! older Prometheus text format; Prometheus asks for OpenMetrics first, so rein answers in it.
//! Differences that matter here: a counter family is named without `_total` in its metadata
//! and its sample keeps the suffix, and the exposition ends with `# EOF`.

use std::fmt::Write as _;

use prometheus::proto::{LabelPair, MetricFamily, MetricType};

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Writes `families` to `out` (infallible: the buffer is memory).
pub fn encode(families: &[MetricFamily], out: &mut Vec<u8>) {
    let mut s = String::with_capacity(out.capacity());
    for mf in families {
        let name = mf.name();
        let (family, kind) = match mf.get_field_type() {
            MetricType::COUNTER => (name.strip_suffix("_total").unwrap_or(name), "counter"),
            MetricType::GAUGE => (name, "gauge"),
            MetricType::HISTOGRAM => (name, "histogram"),
            MetricType::SUMMARY => (name, "summary"),
            MetricType::UNTYPED => (name, "unknown"),
        };
        let _ = writeln!(s, "# TYPE {family} {kind}");
        let _ = writeln!(s, "# HELP {family} {}", escape(mf.help()));
        for m in mf.get_metric() {
            let labels = m.get_label();
            match mf.get_field_type() {
                MetricType::COUNTER => {
                    sample(
                        &mut s,
                        family,
                        "_total",
                        labels,
                        None,
                        m.get_counter().get_value(),
                    );
                }
                MetricType::GAUGE => {
                    sample(&mut s, family, "", labels, None, m.get_gauge().get_value());
                }
                MetricType::HISTOGRAM => {
                    let h = m.get_histogram();
                    for b in h.get_bucket() {
                        let le = number(b.upper_bound());
                        let count = b.cumulative_count() as f64;
                        sample(&mut s, family, "_bucket", labels, Some(&le), count);
                    }
                    let count = h.get_sample_count() as f64;
                    sample(&mut s, family, "_bucket", labels, Some("+Inf"), count);
                    sample(&mut s, family, "_count", labels, None, count);
                    sample(&mut s, family, "_sum", labels, None, h.get_sample_sum());
                }
                // rein exports neither; skip rather than write something malformed.
                MetricType::SUMMARY | MetricType::UNTYPED => {}
            }
        }
    }
    s.push_str("# EOF\n");
    out.extend_from_slice(s.as_bytes());
}

fn sample(
    s: &mut String,
    family: &str,
    suffix: &str,
    labels: &[LabelPair],
    le: Option<&str>,
    value: f64,
) {
    s.push_str(family);
    s.push_str(suffix);
    if !labels.is_empty() || le.is_some() {
        s.push('{');
        let mut first = true;
        let pairs = labels
            .iter()
            .map(|l| (l.name(), l.value()))
            .chain(le.map(|le| ("le", le)));
        for (k, v) in pairs {
            if !first {
                s.push(',');
            }
            first = false;
            let _ = write!(s, "{k}=\"{}\"", escape(v));
        }
        s.push('}');
    }
    let _ = writeln!(s, " {}", number(value));
}

/// OpenMetrics numbers: integers without a fraction, `+Inf`/`-Inf`/`NaN` spelled out.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

/// Escapes `\`, `"` and newlines, in label values and help alike.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use prometheus::{Counter, Histogram, HistogramOpts, Opts, Registry};

    use super::*;

    #[test]
    fn counters_histograms_and_escapes_follow_openmetrics() {
        let r = Registry::new();
        let c = Counter::with_opts(
            Opts::new("rein_test_total", "A \"help\" with \\ and\nnewline.")
                .const_label("name", "a\"b"),
        )
        .unwrap();
        c.inc_by(3.0);
        r.register(Box::new(c)).unwrap();
        let h = Histogram::with_opts(
            HistogramOpts::new("rein_test_seconds", "Delays.").buckets(vec![0.5, 1.0]),
        )
        .unwrap();
        h.observe(0.25);
        h.observe(2.0);
        r.register(Box::new(h)).unwrap();
        let mut out = Vec::new();
        encode(&r.gather(), &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "# TYPE rein_test_seconds histogram\n\
             # HELP rein_test_seconds Delays.\n\
             rein_test_seconds_bucket{le=\"0.5\"} 1\n\
             rein_test_seconds_bucket{le=\"1\"} 1\n\
             rein_test_seconds_bucket{le=\"+Inf\"} 2\n\
             rein_test_seconds_count 2\n\
             rein_test_seconds_sum 2.25\n\
             # TYPE rein_test counter\n\
             # HELP rein_test A \\\"help\\\" with \\\\ and\\nnewline.\n\
             rein_test_total{name=\"a\\\"b\"} 3\n\
             # EOF\n"
        );
    }
}
