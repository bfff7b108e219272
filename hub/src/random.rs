//! Secrets and unguessable ids the hub makes (enrollment secrets, certificate serials, API
//! tokens, re-check request ids) come from the OS random source, never a seeded generator.

/// `N` bytes from the OS random source.
///
/// # Errors
/// When the OS gives none.
pub fn bytes<const N: usize>() -> Result<[u8; N], getrandom::Error> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out)?;
    Ok(out)
}

/// A new API token: 32 random bytes, URL-safe, prefixed so it is recognisable in a leak scan.
///
/// # Errors
/// When the OS gives no randomness.
pub fn api_token() -> Result<String, getrandom::Error> {
    let bytes = bytes::<32>()?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("gst_{hex}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_and_never_repeat() {
        let a = api_token().unwrap();
        let b = api_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 64);
        assert!(a.starts_with("gst_"));
    }
}
