//! The layering ARCHITECTURE.md describes, checked on the source: `pg` <- `audit` <- `auth` <-
//! `policy` <- `enforce`, each layer importing only the ones below it, and no two modules of one
//! layer importing each other. A change that imports upward fails here, not in review.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const LAYERS: [&str; 5] = ["pg", "audit", "auth", "policy", "enforce"];

fn rank(layer: &str) -> usize {
    LAYERS.iter().position(|l| *l == layer).unwrap_or_else(|| panic!("unknown layer {layer}"))
}

/// (layer, module) of a source file: `src/auth/token.rs` is ("auth", "auth::token").
fn module_of(path: &Path) -> (String, String) {
    let rel = path.strip_prefix("src").unwrap().with_extension("");
    let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let module = parts.iter().filter(|p| *p != "mod").cloned().collect::<Vec<_>>().join("::");
    (parts[0].clone(), module)
}

/// Every `crate::a::b` path a file mentions, as ("a", "a::b").
fn imports(text: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        let path: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
        let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
        if let Some(first) = segments.first() {
            let module = if LAYERS.contains(first) && *first != "audit" && segments.len() > 1 {
                format!("{first}::{}", segments[1])
            } else {
                first.to_string()
            };
            out.insert((first.to_string(), module));
        }
    }
    // `use crate::x::{a, b}` groups: count each member as a module of that layer.
    for (i, _) in text.match_indices("use crate::") {
        let rest = &text[i + "use crate::".len()..];
        let Some((layer, tail)) = rest.split_once("::{") else { continue };
        if layer.contains(|c: char| !c.is_alphanumeric() && c != '_') {
            continue;
        }
        let Some((group, _)) = tail.split_once('}') else { continue };
        for member in group.split(',') {
            let member = member.trim().split("::").next().unwrap_or("").trim();
            if !member.is_empty() && member != "self" {
                out.insert((layer.to_string(), format!("{layer}::{member}")));
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn layers_import_only_downward_and_modules_form_no_cycle() {
    std::env::set_current_dir(env!("CARGO_MANIFEST_DIR")).unwrap();
    let mut files = Vec::new();
    rust_files(Path::new("src"), &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut violations = Vec::new();
    for path in &files {
        if path.ends_with("lib.rs") {
            continue; // wiring only
        }
        let (layer, module) = module_of(path);
        let text = std::fs::read_to_string(path).unwrap();
        for (dep_layer, dep_module) in imports(&text) {
            if !LAYERS.contains(&dep_layer.as_str()) {
                continue;
            }
            if rank(&dep_layer) > rank(&layer) {
                violations.push(format!("{} imports {dep_module} (upward)", path.display()));
            }
            if dep_module != module {
                graph.entry(module.clone()).or_default().insert(dep_module);
            }
        }
    }
    assert!(violations.is_empty(), "layering violations:\n{}", violations.join("\n"));
    // No cycle: depth-first search for a back edge.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(node) {
            Some(2) => return None,
            Some(1) => {
                let start = stack.iter().position(|n| n == node).unwrap_or(0);
                let mut cycle = stack[start..].to_vec();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        let mut stack = Vec::new();
        if let Some(cycle) = visit(node, &graph, &mut state, &mut stack) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
    assert!(graph.len() > 15, "the scan found too few modules ({}) to mean anything", graph.len());
}

#[test]
fn every_unsafe_block_states_its_invariant() {
    std::env::set_current_dir(env!("CARGO_MANIFEST_DIR")).unwrap();
    let lib = std::fs::read_to_string("src/lib.rs").unwrap();
    assert!(lib.contains("#![deny(unsafe_op_in_unsafe_fn)]"));
    assert!(lib.contains("#![deny(clippy::undocumented_unsafe_blocks)]"));
    let per_row = std::fs::read_to_string("src/enforce/per_row.rs").unwrap();
    for lint in ["clippy::indexing_slicing", "clippy::panic", "clippy::unwrap_used", "clippy::arithmetic_side_effects"]
    {
        assert!(per_row.contains(lint), "the per-row module must deny {lint}");
    }
}
