//! Counting passed and failed tests from libtest's summary lines, over host suites and guests.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use anyhow::Context as _;

/// Pass/fail counts summed over test binaries.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
}

impl Tally {
    /// Adds the counts of a libtest summary line
    /// (`test result: ok. 14 passed; 0 failed; 0 ignored; ...`); other lines are ignored.
    pub fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let words: Vec<&str> = part.split_whitespace().collect();
            if let [.., n, what] = words.as_slice()
                && let Ok(n) = n.parse::<u64>()
            {
                match *what {
                    "passed" => self.passed += n,
                    "failed" => self.failed += n,
                    _ => {}
                }
            }
        }
    }

    /// The summed summary lines among `lines` (a guest's serial output).
    pub fn of_lines(lines: &[String]) -> Self {
        let mut t = Self::default();
        for l in lines {
            t.add_line(l);
        }
        t
    }
}

/// Runs a test command, echoing its output, and returns the tally of its summary lines.
pub fn run_counting(cmd: &mut Command) -> anyhow::Result<(Tally, bool)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let mut tally = Tally::default();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line?;
            println!("{line}");
            tally.add_line(&line);
        }
    }
    let ok = child.wait()?.success();
    Ok((tally, ok))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_reads_libtest_summaries() {
        let mut t = Tally::default();
        t.add_line("test result: ok. 14 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.17s");
        t.add_line("test result: FAILED. 3 passed; 2 failed; 0 ignored");
        t.add_line("running 3 tests");
        assert_eq!(
            t,
            Tally {
                passed: 17,
                failed: 2
            }
        );
    }
}
