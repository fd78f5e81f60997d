//! The per-container families written straight into the scrape's body, in either format.
//!
//! A thousand containers carry about forty families each: building them as the `prometheus`
//! crate's protobuf values first (a `Metric` with its own copies of every label per sample)
//! cost more than reading the cgroup files. Here each container's label set is escaped and
//! rendered once, and every sample is one append to one buffer. The node's own families (a
//! handful of series) come from the crate's registry and are written here too ([`Body::families`]).
//!
//! Two formats: Prometheus text 0.0.4, and OpenMetrics 1.0 text, which Prometheus asks for
//! first (the `prometheus` crate writes only the older one). Where they differ here: a
//! counter family is named without `_total` in OpenMetrics metadata (its samples keep it),
//! OpenMetrics escapes quotes in help text too, and its exposition ends with `# EOF`.

use std::fmt::Write as _;

use controller_common::{DELAY_BUCKETS, DelayHistogram};
use prometheus::proto::{MetricFamily, MetricType};

/// The content type of an OpenMetrics answer.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of a Prometheus text answer.
pub const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

use super::Format;

/// The body being written.
pub struct Body {
    out: String,
    format: Format,
}

impl Body {
    pub fn new(format: Format, capacity: usize) -> Self {
        Self {
            out: String::with_capacity(capacity),
            format,
        }
    }

    /// The `# HELP` and `# TYPE` lines that open a family. A counter is named with its
    /// `_total` here; OpenMetrics names the family without it (its samples keep it).
    pub fn family(&mut self, name: &str, help: &str, kind: MetricType) {
        let kind_name = match kind {
            MetricType::COUNTER => "counter",
            MetricType::GAUGE => "gauge",
            MetricType::HISTOGRAM => "histogram",
            MetricType::SUMMARY => "summary",
            MetricType::UNTYPED => "untyped",
        };
        let out = &mut self.out;
        match self.format {
            Format::Text => {
                out.push_str("# HELP ");
                out.push_str(name);
                out.push(' ');
                escape_into(out, help, false);
                out.push_str("\n# TYPE ");
                out.push_str(name);
                out.push(' ');
                out.push_str(kind_name);
                out.push('\n');
            }
            Format::OpenMetrics => {
                let family = match kind {
                    MetricType::COUNTER => name.strip_suffix("_total").unwrap_or(name),
                    _ => name,
                };
                let kind_name = if kind == MetricType::UNTYPED {
                    "unknown"
                } else {
                    kind_name
                };
                let _ = writeln!(out, "# TYPE {family} {kind_name}");
                out.push_str("# HELP ");
                out.push_str(family);
                out.push(' ');
                // OpenMetrics escapes quotes in help text too.
                escape_into(out, help, true);
                out.push('\n');
            }
        }
    }

    /// One sample: `name{labels} value`. `labels` is a rendered [`LabelSet`]; `extra` one
    /// more label (a histogram's `le`, a device, a factor), its value escaped here.
    pub fn sample(&mut self, name: &str, labels: &LabelSet, extra: Option<(&str, &str)>, v: f64) {
        let out = &mut self.out;
        out.push_str(name);
        if !labels.0.is_empty() || extra.is_some() {
            out.push('{');
            out.push_str(&labels.0);
            if let Some((k, value)) = extra {
                if !labels.0.is_empty() {
                    out.push(',');
                }
                out.push_str(k);
                out.push_str("=\"");
                escape_into(out, value, true);
                out.push('"');
            }
            out.push('}');
        }
        out.push(' ');
        number(out, v);
        out.push('\n');
    }

    /// A histogram's samples: cumulative buckets of `h` with upper bounds 1 us, 2 us, 4 us,
    /// ... (the last bucket is +Inf), then the count and the sum in seconds. A histogram
    /// without a sample yet has only its +Inf bucket, count and sum (zeros, as both formats
    /// allow): its fifteen finite buckets, all zero, made two thirds of a 1000-container
    /// answer where most containers wait on nothing, and they appear with the first sample.
    pub fn histogram(&mut self, name: &str, labels: &LabelSet, h: &DelayHistogram) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0u64;
        let mut le = String::new();
        let count: u64 = h.buckets.iter().sum();
        let finite = if count == 0 { 0 } else { DELAY_BUCKETS - 1 };
        for (i, n) in h.buckets.iter().enumerate().take(finite) {
            cumulative += n;
            le.clear();
            number(&mut le, f64::from(1u32 << i) / 1e6);
            self.sample(&bucket, labels, Some(("le", &le)), cumulative as f64);
        }
        self.sample(&bucket, labels, Some(("le", "+Inf")), count as f64);
        self.sample(&format!("{name}_count"), labels, None, count as f64);
        self.sample(&format!("{name}_sum"), labels, None, h.sum_ns as f64 / 1e9);
    }

    /// Families the `prometheus` crate gathered (the node's own): counters, gauges and
    /// histograms; other kinds rein does not export are skipped rather than written wrong.
    pub fn families(&mut self, families: &[MetricFamily]) {
        for mf in families {
            let (name, kind) = (mf.name(), mf.get_field_type());
            if !matches!(
                kind,
                MetricType::COUNTER | MetricType::GAUGE | MetricType::HISTOGRAM
            ) {
                continue;
            }
            self.family(name, mf.help(), kind);
            for m in mf.get_metric() {
                let labels = LabelSet::new(m.get_label().iter().map(|l| (l.name(), l.value())));
                match kind {
                    MetricType::COUNTER => {
                        self.sample(name, &labels, None, m.get_counter().get_value());
                    }
                    MetricType::GAUGE => {
                        self.sample(name, &labels, None, m.get_gauge().get_value());
                    }
                    _ => {
                        let h = m.get_histogram();
                        let bucket = format!("{name}_bucket");
                        let mut le = String::new();
                        for b in h.get_bucket() {
                            le.clear();
                            number(&mut le, b.upper_bound());
                            let count = b.cumulative_count() as f64;
                            self.sample(&bucket, &labels, Some(("le", &le)), count);
                        }
                        let count = h.get_sample_count() as f64;
                        self.sample(&bucket, &labels, Some(("le", "+Inf")), count);
                        self.sample(&format!("{name}_count"), &labels, None, count);
                        self.sample(&format!("{name}_sum"), &labels, None, h.get_sample_sum());
                    }
                }
            }
        }
    }

    /// The finished body (OpenMetrics ends with `# EOF`).
    pub fn finish(mut self) -> Vec<u8> {
        if self.format == Format::OpenMetrics {
            self.out.push_str("# EOF\n");
        }
        self.out.into_bytes()
    }
}

/// A series' labels rendered once, values escaped: `id="/rein.slice/web",name="web"`.
#[derive(Debug, Clone, Default)]
pub struct LabelSet(String);

impl LabelSet {
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut s = String::new();
        for (k, v) in pairs {
            if !s.is_empty() {
                s.push(',');
            }
            s.push_str(k);
            s.push_str("=\"");
            escape_into(&mut s, v, true);
            s.push('"');
        }
        Self(s)
    }
}

/// Numbers as both formats spell them: integers without a fraction, `+Inf`, `-Inf`, `NaN`.
fn number(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

/// Escapes `\` and newlines (and `"` in label values), as both formats ask.
fn escape_into(out: &mut String, v: &str, quote: bool) {
    if !v.contains(['\\', '\n', '"']) {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_openmetrics_name_counters_as_each_format_asks() {
        let labels = LabelSet::new([("id", "/rein.slice/a\"b"), ("name", "a\\b")]);
        let mut text = Body::new(Format::Text, 0);
        text.family("x_total", "Help with \\ and\nnewline.", MetricType::COUNTER);
        text.sample("x_total", &labels, Some(("device", "/dev/vda")), 5.0);
        assert_eq!(
            String::from_utf8(text.finish()).unwrap(),
            "# HELP x_total Help with \\\\ and\\nnewline.\n# TYPE x_total counter\n\
             x_total{id=\"/rein.slice/a\\\"b\",name=\"a\\\\b\",device=\"/dev/vda\"} 5\n"
        );
        let mut om = Body::new(Format::OpenMetrics, 0);
        om.family("x_total", "Help.", MetricType::COUNTER);
        om.sample("x_total", &LabelSet::default(), None, 0.5);
        assert_eq!(
            String::from_utf8(om.finish()).unwrap(),
            "# TYPE x counter\n# HELP x Help.\nx_total 0.5\n# EOF\n"
        );
    }

    #[test]
    fn gathered_counters_histograms_and_escapes_follow_openmetrics() {
        use prometheus::{Counter, Histogram, HistogramOpts, Opts, Registry};
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
        let mut b = Body::new(Format::OpenMetrics, 0);
        b.families(&r.gather());
        assert_eq!(
            String::from_utf8(b.finish()).unwrap(),
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

    #[test]
    fn an_empty_histogram_has_only_inf_count_and_sum() {
        let mut b = Body::new(Format::Text, 0);
        b.histogram(
            "d_seconds",
            &LabelSet::new([("name", "a")]),
            &DelayHistogram::default(),
        );
        let text = String::from_utf8(b.finish()).unwrap();
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            [
                "d_seconds_bucket{name=\"a\",le=\"+Inf\"} 0",
                "d_seconds_count{name=\"a\"} 0",
                "d_seconds_sum{name=\"a\"} 0"
            ]
        );
    }

    #[test]
    fn a_histogram_has_cumulative_buckets_then_inf_count_and_sum() {
        let mut h = DelayHistogram {
            sum_ns: 3_000_000,
            ..DelayHistogram::default()
        };
        h.buckets[0] = 1;
        h.buckets[2] = 2;
        h.buckets[DELAY_BUCKETS - 1] = 4;
        let mut b = Body::new(Format::Text, 0);
        b.histogram("d_seconds", &LabelSet::new([("name", "a")]), &h);
        let text = String::from_utf8(b.finish()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "d_seconds_bucket{name=\"a\",le=\"0.000001\"} 1");
        assert_eq!(lines[2], "d_seconds_bucket{name=\"a\",le=\"0.000004\"} 3");
        assert_eq!(
            lines[DELAY_BUCKETS - 2],
            format!(
                "d_seconds_bucket{{name=\"a\",le=\"{}\"}} 3",
                f64::from(1u32 << (DELAY_BUCKETS - 2)) / 1e6
            ),
            "the last bucket is counted only in +Inf"
        );
        assert_eq!(
            lines[DELAY_BUCKETS - 1],
            "d_seconds_bucket{name=\"a\",le=\"+Inf\"} 7"
        );
        assert_eq!(lines[DELAY_BUCKETS], "d_seconds_count{name=\"a\"} 7");
        assert_eq!(lines[DELAY_BUCKETS + 1], "d_seconds_sum{name=\"a\"} 0.003");
    }
}
