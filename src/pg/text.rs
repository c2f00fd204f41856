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

/// Is this text a uuid in one of the forms PostgreSQL's uuid input accepts (hyphens and braces
/// optional, any case)?
pub fn looks_like_uuid(text: &str) -> bool {
    let hex: Vec<u8> = text.bytes().filter(|b| *b != b'-' && *b != b'{' && *b != b'}').collect();
    hex.len() == 32 && hex.iter().all(u8::is_ascii_hexdigit)
}
