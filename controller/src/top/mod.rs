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
