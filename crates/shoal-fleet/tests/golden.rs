//! Golden files: each `tests/golden/NAME.service` is parsed and mapped under its file name, and
//! the result (`{spec, placement, warnings}`, or `{error}` for a refused unit) must equal
//! `tests/golden/NAME.json`. `SHOAL_UPDATE_GOLDEN=1 cargo test -p shoal-fleet --test golden`
//! rewrites the JSON files (read every change before keeping it).

use shoal_fleet::{to_service, UnitFile};
use std::fs;
use std::path::{Path, PathBuf};

fn render(path: &Path) -> String {
    let name = path.file_name().and_then(|n| n.to_str()).expect("file name");
    let text = fs::read_to_string(path).expect("read unit");
    let result = UnitFile::parse(&text).and_then(|u| to_service(&u, name));
    let json = match result {
        Ok(mapped) => serde_json::to_string_pretty(&mapped),
        Err(e) => serde_json::to_string_pretty(&serde_json::json!({ "error": e.to_string() })),
    };
    json.expect("json") + "\n"
}

#[test]
fn golden_units() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var("SHOAL_UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let mut units: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("golden dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "service"))
        .collect();
    units.sort();
    assert!(units.len() >= 10, "expected at least 10 golden units, found {}", units.len());
    let mut failures = Vec::new();
    for unit in &units {
        let got = render(unit);
        let golden = unit.with_extension("json");
        if update {
            fs::write(&golden, &got).expect("write golden");
            continue;
        }
        match fs::read_to_string(&golden) {
            Ok(want) if want == got => {}
            Ok(want) => failures.push(format!(
                "{}: differs from {}\n--- want\n{want}\n--- got\n{got}",
                unit.display(),
                golden.display()
            )),
            Err(_) => failures.push(format!(
                "{}: no {} (run with SHOAL_UPDATE_GOLDEN=1, then read it)",
                unit.display(),
                golden.display()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
