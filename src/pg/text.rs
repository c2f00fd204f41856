//! Rendering untrusted text for messages.

/// A short, safe rendering of an untrusted string for error messages: at most `max` characters,
/// control characters and quotes escaped.
pub fn printable(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).flat_map(|c| c.escape_debug()).collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}
