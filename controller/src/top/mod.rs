//! `rein top`: a live view of the node's containers, like systemd-cgtop with the network
//! (`model`: rates and history; `view`: drawing). Every refresh is one `GET /v1/stats`.
//! When stdout is not a terminal it prints one table after one interval and exits, like
//! `top -b -n 1`.

pub mod model;
pub mod view;

use std::{
    io::IsTerminal as _,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use hyper::Method;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

use self::model::{Model, SortKey};
use crate::api::{Stats, client::Client};

pub struct Options {
    pub interval: Duration,
    pub sort: SortKey,
    /// Print rows as JSON (one sample pair) instead of a table.
    pub json: bool,
    /// Print one table and exit even on a terminal.
    pub once: bool,
    /// Render the live view after a few refreshes into an off-screen buffer of this size and
    /// print its cells as JSON (how the README's screenshot is made from a real run).
    pub snapshot: Option<(u16, u16)>,
}

/// Refreshes before a snapshot: enough history for the sparklines.
const SNAPSHOT_REFRESHES: usize = 8;

/// The live view of `model` rendered off screen, as `{"cols", "rows", "cells": [[symbol,
/// fg, bg, bold]]}` (colours by ratatui name).
fn snapshot(model: &Model, interval_secs: f64, cols: u16, rows: u16) -> anyhow::Result<String> {
    use ratatui::{Terminal, backend::TestBackend, style::Modifier};
    let mut term = Terminal::new(TestBackend::new(cols, rows))?;
    term.draw(|f| view::draw(f, model, interval_secs))?;
    let cells: Vec<serde_json::Value> = term
        .backend()
        .buffer()
        .content()
        .iter()
        .map(|c| {
            serde_json::json!([
                c.symbol(),
                format!("{:?}", c.fg),
                format!("{:?}", c.bg),
                c.modifier.contains(Modifier::BOLD)
            ])
        })
        .collect();
    Ok(serde_json::json!({"cols": cols, "rows": rows, "cells": cells}).to_string())
}

fn fetch(rt: &tokio::runtime::Runtime, client: &Client) -> anyhow::Result<Vec<Stats>> {
    Ok(rt
        .block_on(client.call::<Vec<Stats>>(Method::GET, "/v1/stats", None::<&()>))?
        .unwrap_or_default())
}

/// Runs `rein top`; returns the exit status.
pub fn run(client: &Client, opts: &Options) -> anyhow::Result<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let mut model = Model::new(opts.sort);
    let mut at = Instant::now();
    model.update(fetch(&rt, client)?, Duration::ZERO);
    if let Some((cols, rows)) = opts.snapshot {
        for _ in 0..SNAPSHOT_REFRESHES {
            std::thread::sleep(opts.interval);
            model.update(fetch(&rt, client)?, at.elapsed());
            at = Instant::now();
        }
        println!(
            "{}",
            snapshot(&model, opts.interval.as_secs_f64(), cols, rows)?
        );
        return Ok(0);
    }
    if opts.json || opts.once || !std::io::stdout().is_terminal() {
        std::thread::sleep(opts.interval);
        model.update(fetch(&rt, client)?, at.elapsed());
        if opts.json {
            println!("{}", serde_json::to_string_pretty(&model.rows)?);
        } else {
            print!("{}", view::table_text(&model));
        }
        return Ok(0);
    }
    let mut terminal = ratatui::init();
    let result = (|| -> anyhow::Result<()> {
        let mut next = at + opts.interval;
        loop {
            terminal.draw(|f| view::draw(f, &model, opts.interval.as_secs_f64()))?;
            let wait = next.saturating_duration_since(Instant::now());
            if event::poll(wait)? {
                if let Event::Key(k) = event::read()?
                    && k.kind == KeyEventKind::Press
                {
                    match k.code {
                        KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                            return Ok(());
                        }
                        KeyCode::Char(c) => {
                            if let Some(s) = SortKey::from_key(c) {
                                model.set_sort(s);
                            }
                        }
                        _ => {}
                    }
                }
                continue;
            }
            let sample = fetch(&rt, client)?;
            model.update(sample, at.elapsed());
            at = Instant::now();
            next = at + opts.interval;
        }
    })();
    ratatui::restore();
    result.map(|()| 0)
}
