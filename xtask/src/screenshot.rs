//! `cargo xtask screenshot`: the README's picture of `rein top`, from a real run. The test VM
//! runs the agent and a few limited containers (CPU loops, a disk writer, iperf3 through the
//! shaper), then `rein top --snapshot` renders the live view off screen and prints its cells;
//! here they are drawn with DejaVu Sans Mono into `docs/rein-top.png`.

use std::path::Path;

use anyhow::{Context as _, bail};

use crate::{paths::workspace_root, vm};

/// The workload, after `guest::start_agent("--egress-dev lo")`.
const SCRIPT: &str = r#"
iperf3 -s -D -p 5201; iperf3 -s -D -p 5202
rein run --keep --name web --cpus 0.5 --memory 128M --egress 20mbit -- sh -c 'iperf3 -c 127.0.0.1 -p 5202 -t 40 >/dev/null & timeout 40 sh -c "while :; do :; done"' &
rein run --keep --name batch --cpus 1.5 --memory 256M -- timeout 40 sh -c 'while :; do :; done' &
rein run --keep --name backup --memory 512M --io-max '/dev/vdb wbps=4M' -- rein-test-helper write-direct /dev/vdb 60 >/dev/null &
rein run --keep --name upload --egress 5mbit -- iperf3 -c 127.0.0.1 -t 40 >/dev/null &
rein run --keep --name idle --memory 64M --pids 64 -- sleep 40 &
sleep 3
echo "SNAPSHOT $(rein top --snapshot 118x14 --interval 1)"
"#;

/// Terminal colours by ratatui name (a dark theme).
fn rgb(name: &str, background: bool) -> [u8; 3] {
    match name {
        "Green" => [0x5f, 0xd7, 0x5f],
        "Yellow" => [0xff, 0xd7, 0x00],
        "Red" => [0xff, 0x5f, 0x5f],
        _ if background => [0x1c, 0x1c, 0x1c],
        _ => [0xd0, 0xd0, 0xd0],
    }
}

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf";
const BOLD: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf";
const PX: f32 = 15.0;
const CELL_W: usize = 9;
const CELL_H: usize = 18;

fn font(path: &str) -> anyhow::Result<fontdue::Font> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("{path} (apt-get install fonts-dejavu-core)"))?;
    fontdue::Font::from_bytes(bytes, fontdue::FontSettings::default())
        .map_err(|e| anyhow::anyhow!("{path}: {e}"))
}

/// Box-drawing and block characters as rectangles (x0, y0, x1, y1) in the cell, so that they
/// join up as a terminal draws them (a font's glyphs do not fill the cell).
fn shape(ch: char) -> Option<Vec<(usize, usize, usize, usize)>> {
    let (mx, my) = (CELL_W / 2, CELL_H / 2);
    let h = (0, my, CELL_W, my + 1);
    let v = (mx, 0, mx + 1, CELL_H);
    let right = (mx, my, CELL_W, my + 1);
    let left = (0, my, mx + 1, my + 1);
    let down = (mx, my, mx + 1, CELL_H);
    let up = (mx, 0, mx + 1, my + 1);
    Some(match ch {
        '─' => vec![h],
        '│' => vec![v],
        '┌' => vec![right, down],
        '┐' => vec![left, down],
        '└' => vec![right, up],
        '┘' => vec![left, up],
        '▁'..='█' => {
            let eighths = ch as usize - '▁' as usize + 1;
            vec![(0, CELL_H - CELL_H * eighths / 8, CELL_W, CELL_H)]
        }
        _ => return None,
    })
}

/// Draws the snapshot's cells into an RGB image.
fn render(snap: &serde_json::Value, out: &Path) -> anyhow::Result<()> {
    let cols = snap["cols"].as_u64().context("cols")? as usize;
    let rows = snap["rows"].as_u64().context("rows")? as usize;
    let cells = snap["cells"].as_array().context("cells")?;
    let (regular, bold) = (font(FONT)?, font(BOLD)?);
    let ascent = regular
        .horizontal_line_metrics(PX)
        .map_or(PX * 0.8, |m| m.ascent);
    let (w, h) = (cols * CELL_W, rows * CELL_H);
    let mut img = vec![0u8; w * h * 3];
    for (i, cell) in cells.iter().enumerate() {
        let (cx, cy) = ((i % cols) * CELL_W, (i / cols) * CELL_H);
        let bg = rgb(cell[2].as_str().unwrap_or(""), true);
        let fg = rgb(cell[1].as_str().unwrap_or(""), false);
        for y in cy..cy + CELL_H {
            for x in cx..cx + CELL_W {
                img[(y * w + x) * 3..][..3].copy_from_slice(&bg);
            }
        }
        let Some(ch) = cell[0].as_str().and_then(|s| s.chars().next()) else {
            continue;
        };
        if ch == ' ' {
            continue;
        }
        if let Some(rects) = shape(ch) {
            for (x0, y0, x1, y1) in rects {
                for y in cy + y0..cy + y1 {
                    for x in cx + x0..cx + x1 {
                        img[(y * w + x) * 3..][..3].copy_from_slice(&fg);
                    }
                }
            }
            continue;
        }
        let f = if cell[3].as_bool() == Some(true) {
            &bold
        } else {
            &regular
        };
        let (m, cover) = f.rasterize(ch, PX);
        for gy in 0..m.height {
            for gx in 0..m.width {
                let a = f32::from(cover[gy * m.width + gx]) / 255.0;
                if a == 0.0 {
                    continue;
                }
                let x = cx as i64 + i64::from(m.xmin) + gx as i64;
                let y = cy as i64 + (ascent as i64) - i64::from(m.ymin) - m.height as i64
                    + gy as i64
                    + 1;
                if x < 0 || y < 0 || x as usize >= w || y as usize >= h {
                    continue;
                }
                let p = &mut img[(y as usize * w + x as usize) * 3..][..3];
                for k in 0..3 {
                    p[k] = (f32::from(p[k]) * (1.0 - a) + f32::from(fg[k]) * a) as u8;
                }
            }
        }
    }
    let file = std::fs::File::create(out).with_context(|| out.display().to_string())?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w as u32, h as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()?.write_image_data(&img)?;
    Ok(())
}

pub fn run(args: &vm::VmArgs) -> anyhow::Result<i32> {
    let args = &vm::VmArgs {
        release: true,
        kernel: vm::KernelChoice(vec![vm::kernel::Series::V6_12]),
        ..args.clone()
    };
    let script = workspace_root()
        .join("target")
        .join("vm")
        .join("screenshot.sh");
    std::fs::create_dir_all(script.parent().unwrap_or(&script))?;
    std::fs::write(
        &script,
        crate::guest::start_agent("--egress-dev lo") + SCRIPT,
    )?;
    for (_, outcome) in vm::run_script_outcomes(args, &script)? {
        let Some(snap) = outcome.lines.iter().find_map(|l| {
            serde_json::from_str::<serde_json::Value>(l.strip_prefix("SNAPSHOT ")?).ok()
        }) else {
            bail!("the guest printed no snapshot (status {})", outcome.status);
        };
        let out = workspace_root().join("docs").join("rein-top.png");
        std::fs::create_dir_all(out.parent().unwrap_or(&out))?;
        render(&snap, &out)?;
        println!("wrote {}", out.display());
    }
    Ok(0)
}
