//! `rein check` inside the VM, where every capability rein uses should be present.

use std::process::Command;

use integration_tests::require_vm;

#[test]
fn rein_check_reports_every_capability_present() {
    require_vm();
    let out = Command::new("rein")
        .args(["check", "--json", "--strict"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("rein check --json printed no JSON ({e}): {out:?}"));
    let caps = report["capabilities"].as_array().unwrap();
    let not_ok: Vec<String> = caps
        .iter()
        .filter(|c| c["status"] != "ok")
        .map(|c| format!("{}: {} ({})", c["name"], c["status"], c["detail"]))
        .collect();
    assert!(
        not_ok.is_empty(),
        "expected every capability ok, got:\n{}",
        not_ok.join("\n")
    );
    assert!(caps.len() >= 10, "expected the full table, got {caps:?}");
    assert!(
        out.status.success(),
        "--strict exit status {:?} although all is ok",
        out.status
    );
}
