//! HTTP on loopback, a real Prometheus scraping the agent, and promtool.

use std::{
    path::PathBuf,
    process::{Child, Command},
};

use crate::*;

/// GET over plain HTTP/1.1 (loopback only), returning the body of a 200 answer.
pub fn http_get(addr: &str, path: &str) -> String {
    let (head, body) = http_request(addr, path, "");
    assert!(head.starts_with("HTTP/1."), "{head}");
    assert!(head.split_whitespace().nth(1) == Some("200"), "{head}");
    body
}

/// One HTTP/1.0 GET (so no chunked answer) with `headers` (`"name: value\r\n"` lines);
/// returns the response head and body.
pub fn http_request(addr: &str, path: &str, headers: &str) -> (String, String) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nhost: {addr}\r\n{headers}\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

/// A real Prometheus server (Debian's) scraping `target` every second into a scratch
/// directory, on 127.0.0.1:9090; killed (and its directory removed) when dropped.
pub struct Prometheus {
    child: Child,
    dir: PathBuf,
}

impl Prometheus {
    pub const ADDR: &str = "127.0.0.1:9090";

    pub fn start(target: &str) -> Self {
        require_vm();
        let dir = PathBuf::from("/tmp/prometheus-test");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: rein\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={}", Self::ADDR))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("log")).unwrap())
            .spawn()
            .unwrap();
        let p = Self { child, dir };
        // Ready is not enough: Prometheus hands new targets to its scrape loop at most every
        // 5 s (its discovery manager's update throttle), so the first scrape comes up to 5 s
        // after /-/ready. A series that starts inside a rate() window is extrapolated by
        // only half an interval at its start, which read a steady 20 Mbit/s as 14-16.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let ready = std::net::TcpStream::connect(Self::ADDR).is_ok()
                && http_request(Self::ADDR, "/-/ready", "").0.contains(" 200")
                && p.query(r#"up{job="rein"}"#)
                    .first()
                    .is_some_and(|(_, v)| *v == 1.0);
            if ready {
                return p;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "prometheus did not become ready and scrape {target}: {}",
                std::fs::read_to_string(p.dir.join("log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// An instant PromQL query: each result series' labels and value.
    pub fn query(&self, promql: &str) -> Vec<(serde_json::Value, f64)> {
        self.result(promql, None)
            .iter()
            .map(|r| (r["metric"].clone(), sample_value(&r["value"])))
            .collect()
    }

    /// The `data.result` array of an instant query, evaluated at `time` (Unix seconds) when
    /// given, else now.
    fn result(&self, promql: &str, time: Option<f64>) -> Vec<serde_json::Value> {
        let at = time.map(|t| format!("&time={t:.3}")).unwrap_or_default();
        let body = http_get(
            Self::ADDR,
            &format!("/api/v1/query?query={}{at}", url_encode(promql)),
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{promql}: {body}");
        v["data"]["result"].as_array().unwrap().clone()
    }

    /// The single value of `promql` evaluated at `time` (Unix seconds), if there is one.
    pub fn value_at(&self, promql: &str, time: f64) -> Option<f64> {
        match self.result(promql, Some(time)).as_slice() {
            [r] => Some(sample_value(&r["value"])),
            _ => None,
        }
    }

    /// The raw samples `(Unix seconds, value)` of the single series a range selector such
    /// as `x{name="a"}[5s]` selects when evaluated at `time`: what Prometheus scraped, with
    /// its own timestamps.
    pub fn samples_at(&self, selector: &str, time: f64) -> Vec<(f64, f64)> {
        match self.result(selector, Some(time)).as_slice() {
            [r] => r["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_f64().unwrap(), sample_value(p)))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The single value of `promql`, waiting (up to `timeout`) until there is exactly one.
    pub fn value(&self, promql: &str, timeout: std::time::Duration) -> f64 {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let r = self.query(promql);
            if let [(_, v)] = r.as_slice() {
                return *v;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{promql}: {r:?} after {timeout:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }
}

/// The value of a `[time, "value"]` pair of Prometheus's API.
fn sample_value(pair: &serde_json::Value) -> f64 {
    pair[1].as_str().unwrap().parse().unwrap()
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Encodes `s` for a query string (application/x-www-form-urlencoded, as Prometheus
/// parses it).
pub fn url_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Panics unless `promtool check metrics` finds no problem in `text`.
pub fn promtool_accepts(text: &str) {
    use std::io::Write as _;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {out:?}\n{text}"
    );
}
