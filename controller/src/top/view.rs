//! How `rein top` draws a [`Model`]: the live view (ratatui) and the one-shot table printed
//! when stdout is not a terminal.

use ratatui::{
    Frame,
    layout::{Constraint, Layout},
    style::{Color, Modifier, Style},
    text::Line,
    widgets::{Block, Borders, Cell, Paragraph, Row as TableRow, Sparkline, Table},
};

use super::model::{Model, Row, SortKey};

/// Column titles, and the sort key each belongs to.
const COLUMNS: [(&str, Option<SortKey>); 9] = [
    ("NAME", Some(SortKey::Name)),
    ("CPU%", Some(SortKey::Cpu)),
    ("CPU HISTORY", None),
    ("THR%", Some(SortKey::Throttled)),
    ("MEMORY / LIMIT", Some(SortKey::Memory)),
    ("IO READ/s", Some(SortKey::Io)),
    ("IO WRITE/s", Some(SortKey::Io)),
    ("EGRESS / LIMIT", Some(SortKey::Egress)),
    ("DROPS", Some(SortKey::Drops)),
];

/// Binary-prefixed bytes, as `rein run --memory` takes them.
pub fn bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = b;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0}{}", UNITS[i])
    } else {
        format!("{v:.1}{}", UNITS[i])
    }
}

/// Bits per second from bytes per second, as `--egress` takes them (`20.0mbit`).
pub fn bits(bytes_per_sec: f64) -> String {
    let b = bytes_per_sec * 8.0;
    if b >= 1e9 {
        format!("{:.1}gbit", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1}mbit", b / 1e6)
    } else {
        format!("{:.0}kbit", b / 1e3)
    }
}

/// A sparkline of the last `width` points as block characters, scaled to 100% or the
/// largest point.
pub fn spark(points: &[f64], width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let tail = &points[points.len().saturating_sub(width)..];
    let top = tail.iter().copied().fold(100.0, f64::max);
    tail.iter()
        .map(|p| {
            let i = (p / top * 7.0).round().clamp(0.0, 7.0) as usize;
            BARS[i]
        })
        .collect()
}

/// The cells of one row, as text.
fn cells(r: &Row) -> [String; 9] {
    let with_limit = |used: String, limit: Option<String>| match limit {
        Some(l) => format!("{used} / {l}"),
        None => used,
    };
    [
        r.name.clone(),
        format!("{:.1}", r.cpu_percent),
        spark(&r.history, 16),
        format!("{:.0}", r.throttled_percent),
        with_limit(
            bytes(r.memory_bytes as f64),
            r.memory_limit_bytes.map(|l| bytes(l as f64)),
        ),
        format!("{}/s", bytes(r.io_read_bytes_per_sec)),
        format!("{}/s", bytes(r.io_write_bytes_per_sec)),
        with_limit(
            bits(r.egress_bytes_per_sec),
            r.egress_limit_bytes_per_sec.map(|l| bits(l as f64)),
        ),
        r.drops.to_string(),
    ]
}

const WIDTHS: [u16; 9] = [16, 6, 16, 5, 17, 10, 10, 21, 6];

/// The table as plain text (`rein top` when stdout is not a terminal), without the history
/// column (one sample has none).
pub fn table_text(model: &Model) -> String {
    let keep = |i: usize| i != 2;
    let mut out = String::new();
    let line = |cols: Vec<String>| -> String {
        let mut l = String::new();
        for (i, c) in cols.iter().enumerate().filter(|(i, _)| keep(*i)) {
            let w = usize::from(WIDTHS[i]);
            if i == 0 {
                l.push_str(&format!("{c:<w$} "));
            } else {
                l.push_str(&format!("{c:>w$} "));
            }
        }
        l.trim_end().to_owned()
    };
    out.push_str(&line(
        COLUMNS.iter().map(|(t, _)| (*t).to_owned()).collect(),
    ));
    out.push('\n');
    for r in &model.rows {
        out.push_str(&line(cells(r).to_vec()));
        out.push('\n');
    }
    out
}

/// Draws the live view: a header with the node's CPU sparkline, the table, the keys.
pub fn draw(frame: &mut Frame<'_>, model: &Model, interval_secs: f64) {
    let [header, table, footer] = Layout::vertical([
        Constraint::Length(4),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let total = model.total_history();
    let now = total.last().copied().unwrap_or(0.0);
    let title = format!(
        " rein top · {} containers · CPU {now:.0}% of one CPU · every {interval_secs}s · sorted by {:?} ",
        model.rows.len(),
        model.sort
    );
    let data: Vec<u64> = total.iter().map(|v| v.round() as u64).collect();
    frame.render_widget(
        Sparkline::default()
            .block(Block::default().borders(Borders::ALL).title(title))
            .data(&data)
            .style(Style::default().fg(Color::Green)),
        header,
    );
    let head = TableRow::new(COLUMNS.iter().map(|(t, key)| {
        let style = if *key == Some(model.sort) {
            Style::default()
                .fg(Color::Yellow)
                .add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
        } else {
            Style::default().add_modifier(Modifier::BOLD)
        };
        Cell::from(*t).style(style)
    }));
    let rows = model.rows.iter().map(|r| {
        let c = cells(r);
        let throttled = r.throttled_percent > 25.0;
        let dropping = r.drops > 0;
        TableRow::new(c.into_iter().enumerate().map(move |(i, text)| {
            let style = match i {
                2 => Style::default().fg(Color::Green),
                3 if throttled => Style::default().fg(Color::Red),
                8 if dropping => Style::default().fg(Color::Red),
                _ => Style::default(),
            };
            Cell::from(text).style(style)
        }))
    });
    let widths = WIDTHS.map(Constraint::Length);
    frame.render_widget(
        Table::new(rows, widths)
            .header(head)
            .block(Block::default().borders(Borders::ALL)),
        table,
    );
    let keys: Vec<String> = SortKey::ALL
        .iter()
        .map(|k| format!("{} {:?}", k.key(), k).to_lowercase())
        .collect();
    frame.render_widget(
        Paragraph::new(Line::from(format!(" sort: {}   q quit", keys.join("  ")))),
        footer,
    );
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ratatui::{Terminal, backend::TestBackend};

    use super::*;
    use crate::api::{Container, Stats};

    fn sample(name: &str, cpu_usec: u64) -> Stats {
        Stats {
            container: Container {
                name: name.into(),
                kind: crate::cgroup::Kind::Container,
                group: None,
                path: String::new(),
                limits: [(
                    "memory".to_owned(),
                    crate::api::LimitText::One("64M".into()),
                )]
                .into(),
            },
            usage: crate::api::UsageJson {
                cgroup: crate::cgroup::Usage {
                    cpu_usage_usec: cpu_usec,
                    memory_current_bytes: 3 << 20,
                    ..Default::default()
                },
                ..Default::default()
            },
            egress_mode: String::new(),
        }
    }

    #[test]
    fn the_live_view_and_the_table_show_each_container() {
        let mut m = Model::new(SortKey::Cpu);
        m.update(
            vec![sample("idle", 0), sample("busy", 0)],
            Duration::from_secs(1),
        );
        for i in 1..=3 {
            m.update(
                vec![sample("idle", 0), sample("busy", i * 500_000)],
                Duration::from_secs(1),
            );
        }
        let mut term = Terminal::new(TestBackend::new(150, 12)).unwrap();
        term.draw(|f| draw(f, &m, 1.0)).unwrap();
        let screen: String = term
            .backend()
            .buffer()
            .content()
            .iter()
            .map(|c| c.symbol())
            .collect();
        assert!(screen.contains("rein top · 2 containers"), "{screen}");
        assert!(
            screen.contains("busy") && screen.contains("50.0"),
            "{screen}"
        );
        assert!(screen.contains("3.0M / 64.0M"), "{screen}");
        assert!(screen.contains("▅▅▅"), "the history sparkline: {screen}");
        let text = table_text(&m);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAME") && lines[0].contains("EGRESS / LIMIT"));
        assert!(
            lines[1].starts_with("busy") && lines[1].contains("50.0"),
            "{text}"
        );
        assert!(lines[2].starts_with("idle"), "{text}");
    }

    #[test]
    fn units_read_like_the_flags() {
        assert_eq!(bytes(512.0), "512B");
        assert_eq!(bytes(1.5 * 1024.0 * 1024.0), "1.5M");
        assert_eq!(bits(2_500_000.0), "20.0mbit");
        assert_eq!(bits(1_000.0), "8kbit");
        assert_eq!(spark(&[0.0, 50.0, 100.0, 200.0], 3), "▃▅█");
    }
}
