//! Measuring helpers shared by the benchmarks (benches/pg_authz_bench.rs, benches/scale.rs, benches/citus.rs).
#![allow(dead_code)]

use std::time::Duration;

/// The median of the finite values (NaN when there are none).
pub fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nanoseconds the backend process has spent on a CPU (/proc/PID/schedstat): unlike wall-clock
/// time it excludes the client, the round trips and waiting for one of the shared cores. A
/// parallel plan's workers are separate processes and not counted.
pub fn backend_cpu_ns(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// Replace the section of BENCHMARKS.md that starts with `heading` (up to the next `## `) with
/// `section`, or append it: each benchmark rewrites only its own section.
pub fn write_section(heading: &str, section: &str) {
    let path = "BENCHMARKS.md";
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let out = match text.find(heading) {
        Some(start) => {
            let rest = &text[start + heading.len()..];
            let end = rest.find("\n## ").map(|i| start + heading.len() + i + 1).unwrap_or(text.len());
            format!("{}{}{}", &text[..start], section, &text[end..])
        }
        None if text.trim().is_empty() => section.to_string(),
        None => format!("{}\n\n{section}", text.trim_end()),
    };
    std::fs::write(path, out).expect("write BENCHMARKS.md");
}
