//! Project-wide checks that are cheap enough to run with the tests (rust-analyzer's `tidy`).

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if !path.ends_with("target") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The `[dependencies]` table of a crate's manifest (not dev-dependencies, not features).
fn normal_dependencies(manifest: &str) -> String {
    let mut section = String::new();
    let mut deps = String::new();
    for line in manifest.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            section = trimmed.to_owned();
            continue;
        }
        if section == "[dependencies]" {
            deps.push_str(trimmed);
            deps.push('\n');
        }
    }
    deps
}

#[test]
fn libtorch_free_crates_do_not_require_tch() {
    for krate in [
        "supcon-loss",
        "supcon-data",
        "supcon-augment",
        "supcon-collectives",
    ] {
        let manifest = read(&root().join("crates").join(krate).join("Cargo.toml"));
        for line in normal_dependencies(&manifest).lines() {
            let name = line.split(['=', ' ']).next().unwrap_or("");
            if name == "tch" || name == "torch-sys" {
                assert!(
                    line.contains("optional = true"),
                    "{krate} must not require {name}: make it optional (`{line}`)"
                );
            }
        }
    }
}

#[test]
fn libtorch_free_crates_do_not_depend_on_each_other_or_on_train() {
    for krate in [
        "supcon-loss",
        "supcon-data",
        "supcon-augment",
        "supcon-models",
    ] {
        let manifest = read(&root().join("crates").join(krate).join("Cargo.toml"));
        let deps = normal_dependencies(&manifest);
        assert!(
            !deps.contains("supcon-train"),
            "{krate} must not depend on supcon-train"
        );
        if krate != "supcon-models" {
            for other in [
                "supcon-loss",
                "supcon-data",
                "supcon-augment",
                "supcon-models",
            ] {
                if other != krate {
                    assert!(!deps.contains(other), "{krate} must not depend on {other}");
                }
            }
        }
    }
    // The collectives are a leaf that any crate may use; the loss uses them only with its
    // `collectives` feature (the cross-rank loss), so the loss alone stays MPI-free.
    let collectives = read(&root().join("crates/supcon-collectives/Cargo.toml"));
    assert!(
        !normal_dependencies(&collectives).contains("supcon-"),
        "supcon-collectives must not depend on another supcon crate"
    );
    let loss = read(&root().join("crates/supcon-loss/Cargo.toml"));
    for line in normal_dependencies(&loss).lines() {
        if line.starts_with("supcon-collectives") {
            assert!(
                line.contains("optional = true"),
                "supcon-loss must not require supcon-collectives: `{line}`"
            );
        }
    }
}

#[test]
fn libraries_do_not_print() {
    let mut files = Vec::new();
    for krate in [
        "supcon-loss",
        "supcon-data",
        "supcon-augment",
        "supcon-models",
        "supcon-train",
        "supcon-collectives",
    ] {
        rust_files(&root().join("crates").join(krate).join("src"), &mut files);
    }
    for file in files {
        // The binary and its command modules may print; library code logs with `tracing`.
        let rel = file.strip_prefix(root()).unwrap().display().to_string();
        if rel.contains("/src/bin/") || rel.contains("/src/main.rs") || rel.contains("/src/cli") {
            continue;
        }
        let text = read(&file);
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            assert!(
                !code.contains("println!(") && !code.contains("print!(") && !code.contains("dbg!("),
                "{rel}:{}: library code prints; use tracing",
                n + 1
            );
        }
    }
}

#[test]
fn ci_runs_exactly_the_readme_test_command() {
    let ci = read(&root().join(".ci/run"));
    let commands: Vec<&str> = ci
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with('#') && !l.starts_with("set ") && !l.starts_with("cd ")
        })
        .collect();
    assert_eq!(
        commands,
        ["cargo xtask test"],
        ".ci/run must run exactly the README's test command"
    );
    assert!(read(&root().join("README.md")).contains("cargo xtask test"));
}

#[test]
fn every_book_page_in_the_summary_exists() {
    let docs = root().join("docs/src");
    let summary = read(&docs.join("SUMMARY.md"));
    for part in summary.split("](").skip(1) {
        let page = part.split(')').next().unwrap();
        assert!(
            docs.join(page).exists(),
            "docs/src/SUMMARY.md lists {page}, which is missing"
        );
    }
}

#[test]
fn licences_are_present() {
    for file in ["LICENSE-MIT", "LICENSE-APACHE"] {
        assert!(root().join(file).exists(), "{file} is missing");
    }
}

/// The libtorch-free crates can be published on their own: `cargo package` finds every file
/// they need inside their own folders (no `include!` across crates) and every dependency is a
/// crate that is published with them (supcon-link, their build-dependency for the `tch`
/// feature's rpath).
#[test]
fn libtorch_free_crates_package_on_their_own() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("package-check");
    let output = std::process::Command::new(cargo)
        .current_dir(root())
        .args(["package", "--no-verify", "--allow-dirty", "--quiet"])
        .args(["-p", "supcon-link"])
        .args([
            "-p",
            "supcon-loss",
            "-p",
            "supcon-data",
            "-p",
            "supcon-augment",
            "-p",
            "supcon-collectives",
        ])
        .arg("--target-dir")
        .arg(&target)
        .output()
        .expect("run cargo package");
    assert!(
        output.status.success(),
        "cargo package failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for krate in [
        "supcon-loss",
        "supcon-data",
        "supcon-augment",
        "supcon-collectives",
    ] {
        let file = target.join("package").join(format!("{krate}-0.1.0.crate"));
        assert!(file.exists(), "{} is missing", file.display());
    }
}

#[test]
fn build_scripts_include_nothing_from_other_crates() {
    for entry in std::fs::read_dir(root().join("crates")).unwrap().flatten() {
        let build = entry.path().join("build.rs");
        if build.exists() {
            let text = read(&build);
            assert!(
                !text.contains("include!(\"../"),
                "{} includes a file of another crate; depend on supcon-link instead",
                build.display()
            );
        }
    }
}

/// Every file or folder under `dir` whose name is `name` (the code map names files by name).
fn find_named(dir: &Path, name: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == name) {
            out.push(path.clone());
        }
        if path.is_dir() && !path.ends_with("target") {
            find_named(&path, name, out);
        }
    }
}

#[test]
fn architecture_code_map_names_what_exists() {
    let text = read(&root().join("ARCHITECTURE.md"));
    let map = text
        .split("## Code map")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("ARCHITECTURE.md has a code map");
    let mut rows = 0;
    for row in map.lines().filter(|l| l.starts_with("| `")) {
        rows += 1;
        let mut cells = row.split(" | ");
        let path = cells
            .next()
            .unwrap()
            .trim_start_matches("| ")
            .trim_matches('`');
        let dir = root().join(path.trim_end_matches('/'));
        assert!(
            dir.exists(),
            "ARCHITECTURE.md's code map names {path}, which is missing"
        );
        // The files and folders a row's text names (`plan.rs`, `pipeline/`), globs aside.
        let what = cells.collect::<Vec<_>>().join(" | ");
        // Where the row's names live: its path, and any folder the row names from the root.
        let mut places = vec![dir.clone()];
        places.extend(
            what.split('`')
                .skip(1)
                .step_by(2)
                .map(|name| root().join(name.trim_end_matches('/')))
                .filter(|p| p.is_dir()),
        );
        for name in what.split('`').skip(1).step_by(2) {
            let named = name.trim_end_matches('/');
            let is_path = name.ends_with(".rs") || name.ends_with('/');
            if !is_path || named.contains('*') || !dir.is_dir() || root().join(named).exists() {
                continue;
            }
            let (last, parent) = match named.rsplit_once('/') {
                Some((parent, last)) => (last, Some(parent)),
                None => (named, None),
            };
            let mut found = Vec::new();
            for place in &places {
                find_named(place, last, &mut found);
            }
            found.retain(|p| {
                parent.is_none_or(|parent| p.parent().is_some_and(|d| d.ends_with(parent)))
            });
            assert!(
                !found.is_empty(),
                "ARCHITECTURE.md's code map names `{name}` under {path}; nothing there has that name"
            );
        }
    }
    assert!(rows >= 10, "the code map's rows were not found ({rows})");
}

#[test]
fn error_messages_do_not_repeat_their_source() {
    // A message that prints its source also returns it from `source()`: `main` would print it
    // twice. Each layer says what it adds; `supcon_train::error::chain` prints the causes.
    let mut files = Vec::new();
    rust_files(&root().join("crates"), &mut files);
    for file in files {
        let text = read(&file);
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            let Some(message) = line.trim().strip_prefix("#[error(") else {
                continue;
            };
            let rel = file.strip_prefix(root()).unwrap().display();
            assert!(
                !message.contains("{source}"),
                "{rel}:{}: the message prints its source",
                n + 1
            );
            let from_follows = lines[n + 1..].iter().take(3).any(|l| l.contains("#[from]"));
            assert!(
                !(message.contains("{0}") && from_follows),
                "{rel}:{}: the message prints its #[from] source",
                n + 1
            );
        }
    }
}

/// The modules of supcon-train (top level of `src/`) and, for each, the others it names as
/// `crate::<module>` in code (comments aside).
fn train_module_graph() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let src = root().join("crates/supcon-train/src");
    let mut graph = std::collections::BTreeMap::new();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "main" || module == "lib" {
            continue;
        }
        let uses: &mut std::collections::BTreeSet<String> =
            graph.entry(module.clone()).or_default();
        for line in read(file).lines() {
            let code = line.split("//").next().unwrap_or("");
            for part in code.split("crate::").skip(1) {
                let name: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                    .collect();
                if !name.is_empty() && name != module {
                    uses.insert(name);
                }
            }
        }
    }
    graph
}

/// Panics naming a module of `graph` that is in an import cycle (`what` names the graph).
fn assert_acyclic(
    graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
    what: &str,
) {
    let names: Vec<&String> = graph.keys().collect();
    let index = |name: &str| names.iter().position(|n| *n == name);
    let n = names.len();
    let mut reach = vec![vec![false; n]; n];
    for (a, uses) in graph.values().enumerate() {
        for b in uses.iter().filter_map(|u| index(u)) {
            reach[a][b] = true;
        }
    }
    for k in 0..n {
        for a in 0..n {
            for b in 0..n {
                reach[a][b] = reach[a][b] || (reach[a][k] && reach[k][b]);
            }
        }
    }
    for a in 0..n {
        let in_cycle: Vec<&str> = (0..n)
            .filter(|&b| b != a && reach[a][b] && reach[b][a])
            .map(|b| names[b].as_str())
            .collect();
        assert!(
            in_cycle.is_empty(),
            "{what}'s module {} is in an import cycle with {in_cycle:?}",
            names[a]
        );
    }
}

/// The pipeline's children (`pipeline/<child>.rs` or `pipeline/<child>/`) and the siblings each
/// imports (`super::x` from a direct child, `crate::pipeline::x` from anywhere in it); an
/// import of what `pipeline/mod.rs` itself holds (a capitalized name) is the edge `mod`.
fn pipeline_module_graph() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>>
{
    let src = root().join("crates/supcon-train/src/pipeline");
    let mut graph = std::collections::BTreeMap::new();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let direct_child = rel.components().count() == 1;
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        let uses: &mut std::collections::BTreeSet<String> =
            graph.entry(module.clone()).or_default();
        for line in read(file).lines() {
            let code = line.split("//").next().unwrap_or("");
            let mut imports: Vec<&str> = code.split("crate::pipeline::").skip(1).collect();
            if direct_child {
                imports.extend(code.split("super::").skip(1));
            }
            for part in imports {
                // `x::…`, or a group `{x, y::…, Z}`: the first segment of each path.
                let paths: Vec<&str> = match part.strip_prefix('{') {
                    Some(rest) => rest.split('}').next().unwrap_or("").split(',').collect(),
                    None => vec![part],
                };
                for path in paths {
                    let name: String = path
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    let edge = match name.chars().next() {
                        Some(c) if c.is_ascii_uppercase() => "mod".to_string(),
                        Some(_) => name,
                        None => continue,
                    };
                    if edge != module && edge != "self" {
                        uses.insert(edge);
                    }
                }
            }
        }
    }
    graph
}

#[test]
fn supcon_train_modules_import_each_other_without_cycles() {
    let graph = train_module_graph();
    assert_acyclic(&graph, "supcon-train");
    // The pipeline's children import each other without cycles, and none imports from the
    // entry point `pipeline/mod.rs` (it re-exports them; it does no work of its own).
    let pipeline = pipeline_module_graph();
    assert_acyclic(&pipeline, "the pipeline");
    for (child, uses) in &pipeline {
        assert!(
            child == "mod" || !uses.contains("mod"),
            "pipeline/{child} imports from pipeline/mod.rs; import the sibling that holds it"
        );
    }
    // The leaves stay leaves; the schema never reaches into the pipeline.
    assert!(
        graph["config"].iter().all(|m| m == "error" || m == "files"),
        "config must import nothing of the crate but its leaves error and files: {:?}",
        graph["config"]
    );
    assert!(
        graph.contains_key("vocabulary"),
        "the leaf of shared words is gone"
    );
    assert!(
        graph["vocabulary"].is_empty(),
        "vocabulary must stay a leaf: it imports {:?}",
        graph["vocabulary"]
    );
}

/// The code map's rows: (path, the rest of the row).
fn code_map_rows() -> Vec<(String, String)> {
    let text = read(&root().join("ARCHITECTURE.md"));
    let map = text
        .split("## Code map")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("ARCHITECTURE.md has a code map")
        .to_owned();
    map.lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|row| {
            let (path, rest) = row.trim_start_matches("| `").split_once('`')?;
            Some((path.to_owned(), rest.to_owned()))
        })
        .collect()
}

#[test]
fn architecture_code_map_lists_every_loss_and_method() {
    let rows = code_map_rows();
    // Every loss folder of supcon-loss (a folder with a mod.rs) has its own row.
    let losses = root().join("crates/supcon-loss/src");
    for entry in std::fs::read_dir(&losses).unwrap().flatten() {
        if !entry.path().join("mod.rs").exists() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = format!("crates/supcon-loss/src/{name}");
        assert!(
            rows.iter().any(|(p, _)| *p == path),
            "ARCHITECTURE.md's code map has no row for the loss folder {path}"
        );
    }
    // Every method module is named in the methods row.
    let methods = "crates/supcon-train/src/pipeline/methods";
    let (_, row) = rows
        .iter()
        .find(|(p, _)| p == methods)
        .unwrap_or_else(|| panic!("ARCHITECTURE.md's code map has no row for {methods}"));
    for entry in std::fs::read_dir(root().join(methods)).unwrap().flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if file == "mod.rs" {
            continue;
        }
        assert!(
            row.contains(&format!("`{file}`")),
            "ARCHITECTURE.md's methods row does not name {file}"
        );
    }
}

/// Where a method's name may appear in supcon-train's code (comments aside), and why: the
/// recipe of ARCHITECTURE.md's "Adding a method" keeps everything else method-free.
const METHOD_NAME_PLACES: &[(&str, &str)] = &[
    (
        "pipeline/methods/mod.rs",
        "the registry (`parts`) and the module list",
    ),
    (
        "config/mod.rs",
        "the `Method` enum and the settings tables' fields",
    ),
    (
        "config/methods.rs",
        "the schema: each method's requirements and settings table",
    ),
    ("config/presets.rs", "the presets' names"),
    ("cli/mod.rs", "`supcon loss --method`: one loss per name"),
    ("cli/commands.rs", "`supcon loss`: each loss's options"),
    (
        "error.rs",
        "InstDisc's running Z has its own error (`NonFinitePartition`)",
    ),
];

#[test]
fn a_methods_name_appears_only_in_its_own_places() {
    let src = root().join("crates/supcon-train/src");
    let methods = ["moco", "instdisc", "invspread", "swav", "cmc", "cpc"];
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut strays = Vec::new();
    for file in files {
        let relative = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if METHOD_NAME_PLACES
            .iter()
            .any(|(place, _)| *place == relative)
        {
            continue;
        }
        let text = read(&file);
        for (number, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            let lower = line.to_lowercase();
            let words: Vec<&str> = lower.split(|c: char| !c.is_ascii_alphanumeric()).collect();
            for method in methods {
                // A method's own module (and MoCo's shared momentum encoder) may name it.
                let own = relative == format!("pipeline/methods/{method}.rs")
                    || (method == "moco" && relative == "pipeline/methods/momentum.rs");
                if !own && words.contains(&method) {
                    strays.push(format!(
                        "{relative}:{}: {method}: {}",
                        number + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        strays.is_empty(),
        "a method's name outside its own places (ARCHITECTURE.md, \"Adding a method\"):\n{}",
        strays.join("\n")
    );
}

/// Where a function may start: `fn name` after optional `pub`, `pub(crate)`, `const`,
/// `async` or `unsafe`, at the line's indentation.
fn function_name(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    for prefix in [
        "pub(crate) ",
        "pub(super) ",
        "pub ",
        "const ",
        "async ",
        "unsafe ",
    ] {
        rest = rest.strip_prefix(prefix).unwrap_or(rest);
    }
    let name = rest.strip_prefix("fn ")?;
    name.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .next()
}

#[test]
fn no_function_outside_tests_is_over_150_lines() {
    let mut files = Vec::new();
    rust_files(&root().join("crates"), &mut files);
    rust_files(&root().join("xtask/src"), &mut files);
    let mut long = Vec::new();
    for file in files {
        let path = file.to_string_lossy();
        if path.contains("/tests/") || path.contains("/benches/") || path.contains("/examples/") {
            continue;
        }
        let text = read(&file);
        let lines: Vec<&str> = text.lines().collect();
        for (start, line) in lines.iter().enumerate() {
            if line.trim_start().starts_with("#[cfg(test)]") {
                break; // the unit tests sit at the end of a file
            }
            let Some(name) = function_name(line) else {
                continue;
            };
            let indent = &line[..line.len() - line.trim_start().len()];
            let end = lines[start + 1..]
                .iter()
                .position(|l| *l == format!("{indent}}}"))
                .map_or(0, |offset| offset + 2);
            if end > 150 {
                long.push(format!("{}:{} {name}: {end} lines", path, start + 1));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over 150 lines (split them into pieces the caller composes):\n{}",
        long.join("\n")
    );
}
